//! The unrolled loops (text-to-image now; tune, invert, sample as they land), each reporting progress and
//! honouring cancellation at every step.

pub mod t2i;
