//! Fault injection, for tests of what happens when something breaks deep inside a run: with
//! `VIDTUNE_FAILPOINTS=name[,name…]` in the environment, [`hit`]`(name)` panics where it is called, as a
//! bug would. Without the variable nothing is injected; the places are few and named where they are:
//!
//! - `tune-step`: each step of `tune`, before its forward pass.

/// Panics when `VIDTUNE_FAILPOINTS` names `name`.
pub fn hit(name: &str) {
    hit_in(std::env::var("VIDTUNE_FAILPOINTS").ok().as_deref(), name)
}

fn hit_in(list: Option<&str>, name: &str) {
    if list.is_some_and(|l| l.split(',').any(|n| n.trim() == name)) {
        panic!("failpoint {name}: a panic injected by VIDTUNE_FAILPOINTS");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_named_failpoint_panics() {
        let caught = std::panic::catch_unwind(|| super::hit_in(Some("other, tune-step"), "tune-step"));
        let message = caught.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("failpoint tune-step"), "{message}");
        super::hit_in(Some("other, tune-step"), "sample-step");
        super::hit_in(Some("tune-steps"), "tune-step");
        super::hit_in(None, "tune-step");
    }
}
