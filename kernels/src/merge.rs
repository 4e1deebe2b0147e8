//! Cross-frame token merging (VidToMe, Li et al., CVPR 2024, §3.2; ToMe's bipartite soft matching): the
//! tokens of a chunk of frames are split into a destination set — the tokens of one frame of the chunk —
//! and a source set — the other frames' tokens. Each source token is matched to its most similar
//! destination token (cosine similarity of the tokens); the `r` best-matched source tokens are merged into
//! their destinations (each destination becomes the mean of itself and the sources merged into it). The
//! chunk then attends over the merged tokens, jointly across its frames, and each token takes the output
//! of the token it became ([`unmerge`]).

use crate::error::{expect_dims, KernelError, Result};
use tch::{Kind, Tensor};

/// A chunk's merge: the merged tokens and, for each original token (frame-major, `[c·L]`), the row of the
/// merged tokens it became.
#[derive(Debug)]
pub struct Merged {
    /// `[M, C]`: the source tokens kept, then the destination frame's tokens (with the merged sources
    /// averaged in).
    pub tokens: Tensor,
    /// `[c·L]` (int64): the merged row of each original token.
    pub index: Tensor,
}

/// Merges `r` source tokens of `x` `[c, L, C]` (a chunk of `c` frames of `L` tokens) into the tokens of
/// frame `target`.
pub fn bipartite_merge(x: &Tensor, target: i64, r: i64) -> Result<Merged> {
    expect_dims(x, 3, "a chunk's tokens", "[frames, L, C]")?;
    let (c, l, ch) = (x.size()[0], x.size()[1], x.size()[2]);
    if !(0..c).contains(&target) {
        return Err(KernelError::Invalid(format!("token merging: target frame {target} outside 0..{c}")));
    }
    let n_src = (c - 1) * l;
    if r < 0 || r > n_src {
        return Err(KernelError::Invalid(format!("token merging: {r} tokens to merge of {n_src}")));
    }
    let dev = x.device();
    let dst = x.get(target);
    if c == 1 {
        return Ok(Merged { tokens: dst, index: Tensor::arange(l, (Kind::Int64, dev)) });
    }
    // The source tokens in frame order, and the original position of each.
    let others: Vec<i64> = (0..c).filter(|&f| f != target).collect();
    let src = x.index_select(0, &Tensor::from_slice(&others).to_device(dev)).reshape([n_src, ch]);
    let norm = |t: &Tensor| {
        let f = t.to_kind(Kind::Float);
        &f / f.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-6)
    };
    let sim = norm(&src).matmul(&norm(&dst).transpose(0, 1));
    let (best, best_dst) = sim.max_dim(-1, false);
    // The `r` best-matched sources (stable order among equal scores).
    let order = best.argsort_stable(true, 0, true);
    let merged_src = order.narrow(0, 0, r);
    let kept_src = order.narrow(0, r, n_src - r).sort(0, false).0;
    let kept = src.index_select(0, &kept_src);
    // Each destination: the mean of itself and the sources merged into it.
    let targets = best_dst.index_select(0, &merged_src);
    let sums = dst.to_kind(Kind::Float).index_add(0, &targets, &src.index_select(0, &merged_src).to_kind(Kind::Float));
    let counts = Tensor::ones([l], (Kind::Float, dev)).index_add(0, &targets, &Tensor::ones([r], (Kind::Float, dev)));
    let dst_new = (sums / counts.unsqueeze(-1)).to_kind(x.kind());
    let tokens = Tensor::cat(&[kept, dst_new], 0);
    // Where each original token went: a kept source to its row, a merged source to its destination's, a
    // destination token to its own (after the kept sources).
    let kept_n = n_src - r;
    let mut src_row = Tensor::zeros([n_src], (Kind::Int64, dev));
    src_row = src_row.index_put(&[Some(kept_src.shallow_clone())], &Tensor::arange(kept_n, (Kind::Int64, dev)), false);
    src_row = src_row.index_put(&[Some(merged_src)], &(targets + kept_n), false);
    let mut rows = vec![];
    let mut at = 0;
    for f in 0..c {
        if f == target {
            rows.push(Tensor::arange(l, (Kind::Int64, dev)) + kept_n);
        } else {
            rows.push(src_row.narrow(0, at * l, l));
            at += 1;
        }
    }
    Ok(Merged { tokens, index: Tensor::cat(&rows, 0) })
}

/// The output of every original token `[c, L, C']` from the merged tokens' outputs `[M, C']`.
pub fn unmerge(out: &Tensor, merged: &Merged, frames: i64) -> Result<Tensor> {
    expect_dims(out, 2, "merged outputs", "[M, C]")?;
    if out.size()[0] != merged.tokens.size()[0] {
        return Err(KernelError::Invalid(format!(
            "token merging: {} outputs for {} merged tokens",
            out.size()[0],
            merged.tokens.size()[0]
        )));
    }
    let n = merged.index.size()[0];
    Ok(out.index_select(0, &merged.index).view([frames, n / frames.max(1), -1]))
}
