//! Attention fusion (FateZero, Qi et al., ICCV 2023, §3.2–3.3) and prompt-to-prompt's cross-attention
//! controls (Hertz et al., ICLR 2023, §3.2) on attention **probabilities** `[N, heads, S, T]` (after the
//! softmax; `N` frames, `S` queries, `T` keys), and the token maps they use. Stateless: the stored maps
//! and the edit's own come in as tensors, the words as token positions.
//!
//! - [`blend_mask`]: FateZero's attention-blending mask `M` (Eq. 7): the source words' cross-attention,
//!   summed over their tokens, averaged over layers and heads, max-pooled 3 × 3, resized (nearest) to the
//!   self-attention layer, divided by each frame's maximum and thresholded.
//! - [`fuse_self`]: `M ⊙ edit + (1 − M) ⊙ source` per query row (Eq. 8); without a mask the source's map.
//! - [`replace_cross`] (word swap, `source · mapper`), [`refine_cross`] (new words: the aligned source
//!   columns where a target token has one, the edit's own elsewhere), [`reweight`] (scale chosen tokens'
//!   columns, no renormalisation, as the reference does).
//! - [`replacement_mapper`] and [`refinement_mapper`]: which source token each target token takes its map
//!   from (prompt-to-prompt's `seq_aligner`: the word-for-word mapper and the global alignment of the
//!   token ids).

use crate::error::{expect_dims, KernelError, Result};
use tch::{Kind, Tensor};

/// FateZero's blending mask for a self-attention layer of `out = (h, w)` tokens, from cross-attention
/// maps `maps` (each `[N, heads, hs·ws, T]`, at the spatial size `side = (hs, ws)`) of the words at
/// token positions `tokens`: `[N, h·w]` holding 0 and 1 (1: the edit's own attention). A frame whose maps
/// are all zero gives 0/0 and so an empty mask, as in the reference.
pub fn blend_mask(
    maps: &[Tensor],
    side: (i64, i64),
    tokens: &[i64],
    out: (i64, i64),
    threshold: f64,
) -> Result<Tensor> {
    let Some(first) = maps.first() else {
        return Err(KernelError::Invalid("blend mask: no cross-attention maps".into()));
    };
    let (hs, ws) = side;
    for m in maps {
        expect_dims(m, 4, "cross-attention maps", "[N, heads, S, T]")?;
        if m.size()[0] != first.size()[0] || m.size()[2] != hs * ws || m.size()[3] != first.size()[3] {
            return Err(KernelError::Invalid(format!(
                "blend mask: maps {:?} and {:?} differ, or do not hold {hs}x{ws} queries",
                first.size(),
                m.size()
            )));
        }
    }
    let t = first.size()[3];
    if tokens.is_empty() || tokens.iter().any(|&k| !(0..t).contains(&k)) {
        return Err(KernelError::Invalid(format!("blend mask: token positions {tokens:?} outside 0..{t}")));
    }
    let n = first.size()[0];
    let idx = Tensor::from_slice(tokens).to_device(first.device());
    // Σ over the words' tokens, then the mean over every (layer, head) map.
    let per_layer: Vec<Tensor> = maps
        .iter()
        .map(|m| m.to_kind(Kind::Float).index_select(3, &idx).sum_dim_intlist(3, false, Kind::Float))
        .collect();
    let mean = Tensor::cat(&per_layer, 1).mean_dim(1, false, Kind::Float).view([n, 1, hs, ws]);
    let pooled = mean.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false);
    let resized = pooled.upsample_nearest2d([out.0, out.1], None, None).view([n, out.0 * out.1]);
    let peak = resized.amax(1, true);
    Ok((resized / peak).gt(threshold).to_kind(Kind::Float))
}

/// `mask ⊙ edit + (1 − mask) ⊙ source` for maps `[N, heads, S, T]` and a mask `[N, S]` over the query
/// rows; without a mask the source's map.
pub fn fuse_self(edit: &Tensor, source: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    expect_dims(edit, 4, "attention maps", "[N, heads, S, T]")?;
    if edit.size() != source.size() {
        return Err(KernelError::Invalid(format!(
            "self-attention fusion: the edit's maps {:?} and the stored {:?} differ (the same modules and frames \
             must run in both)",
            edit.size(),
            source.size()
        )));
    }
    let source = source.to_kind(edit.kind()).to_device(edit.device());
    let Some(m) = mask else { return Ok(source) };
    let (n, s) = (edit.size()[0], edit.size()[2]);
    if m.size() != [n, s] {
        return Err(KernelError::Invalid(format!(
            "self-attention fusion: mask {:?} for maps {:?}",
            m.size(),
            edit.size()
        )));
    }
    let m = m.to_kind(edit.kind()).to_device(edit.device()).view([n, 1, s, 1]);
    Ok(&m * edit + (m.ones_like() - &m) * source)
}

fn check_tokens(maps: &Tensor, l: i64, what: &str) -> Result<()> {
    expect_dims(maps, 4, "attention maps", "[N, heads, S, T]")?;
    if maps.size()[3] != l {
        return Err(KernelError::Invalid(format!("{what}: {} keys for a map over {l} tokens", maps.size()[3])));
    }
    Ok(())
}

/// Word swap: the target's map of token `n` is `Σ_w source[…, w] · mapper[w, n]` (`mapper` `[T, T]`).
pub fn replace_cross(source: &Tensor, mapper: &Tensor) -> Result<Tensor> {
    check_tokens(source, mapper.size()[0], "word swap")?;
    Ok(source.matmul(&mapper.to_kind(source.kind()).to_device(source.device())))
}

/// Refinement: target token `n` takes the source's column `mapper[n]` where `alphas[n]` is 1, and keeps
/// the edit's own column where it is 0 (a word the source lacks). `mapper[n] = −1` reads the last column,
/// as Python's indexing does (its alpha is 0).
pub fn refine_cross(source: &Tensor, edit: &Tensor, mapper: &[i64], alphas: &[f32]) -> Result<Tensor> {
    let t = source.size().last().copied().unwrap_or(0);
    check_tokens(source, t, "refinement")?;
    check_tokens(edit, t, "refinement")?;
    if mapper.len() as i64 != t || alphas.len() as i64 != t {
        return Err(KernelError::Invalid(format!(
            "refinement: a mapper of {} and {} alphas for {t} tokens",
            mapper.len(),
            alphas.len()
        )));
    }
    let idx: Vec<i64> = mapper.iter().map(|&m| if m < 0 { t + m } else { m }).collect();
    if idx.iter().any(|&m| !(0..t).contains(&m)) {
        return Err(KernelError::Invalid(format!("refinement: mapper entries outside 0..{t}")));
    }
    let dev = source.device();
    let taken = source.to_kind(edit.kind()).index_select(3, &Tensor::from_slice(&idx).to_device(dev));
    let a = Tensor::from_slice(alphas).to_kind(edit.kind()).to_device(dev).view([1, 1, 1, t]);
    Ok(taken * &a + edit * (a.ones_like() - &a))
}

/// Scales each token's column by `weights` `[T]` (prompt-to-prompt's reweighting; the rows are not
/// renormalised, as in the reference).
pub fn reweight(maps: &Tensor, weights: &[f32]) -> Result<Tensor> {
    check_tokens(maps, weights.len() as i64, "reweighting")?;
    let w = Tensor::from_slice(weights).to_kind(maps.kind()).to_device(maps.device());
    Ok(maps * w.view([1, 1, 1, -1]))
}

/// prompt-to-prompt's word-for-word mapper `[len, len]` for two prompts of the same number of words:
/// `source_words[k]` and `target_words[k]` are the token counts of word `k`, `differs[k]` whether the
/// words differ. Tokens start at position 1 (after the start token). A swapped word of as many tokens maps
/// token to token; otherwise each source token spreads evenly over the target's. Before the last swapped
/// word other tokens map to the aligned position; after it, each position to itself (as the reference
/// writes it).
pub fn replacement_mapper(source_words: &[i64], target_words: &[i64], differs: &[bool], len: i64) -> Result<Tensor> {
    if source_words.len() != target_words.len() || differs.len() != source_words.len() {
        return Err(KernelError::Invalid(format!(
            "word swap needs prompts of the same number of words ({} and {})",
            source_words.len(),
            target_words.len()
        )));
    }
    // The token positions of each swapped word, in the source and the target.
    let positions = |words: &[i64]| {
        let mut at = 1i64;
        words
            .iter()
            .map(|&n| {
                let r = at..at + n;
                at += n;
                r
            })
            .collect::<Vec<_>>()
    };
    let (ps, pt) = (positions(source_words), positions(target_words));
    let swaps: Vec<(std::ops::Range<i64>, std::ops::Range<i64>)> =
        (0..differs.len()).filter(|&k| differs[k]).map(|k| (ps[k].clone(), pt[k].clone())).collect();
    let l = len as usize;
    let mut m = vec![0f32; l * l];
    let (mut i, mut j, mut cur) = (0i64, 0i64, 0usize);
    while i < len && j < len {
        if cur < swaps.len() && swaps[cur].0.start == i {
            let (s, t) = &swaps[cur];
            if s.end - s.start == t.end - t.start {
                for (a, b) in s.clone().zip(t.clone()) {
                    if a < len && b < len {
                        m[a as usize * l + b as usize] = 1.0;
                    }
                }
            } else {
                let ratio = 1.0 / (t.end - t.start).max(1) as f32;
                for a in s.clone().filter(|&a| a < len) {
                    for b in t.clone().filter(|&b| b < len) {
                        m[a as usize * l + b as usize] = ratio;
                    }
                }
            }
            i += s.end - s.start;
            j += t.end - t.start;
            cur += 1;
        } else if cur < swaps.len() {
            m[i as usize * l + j as usize] = 1.0;
            i += 1;
            j += 1;
        } else {
            m[j as usize * l + j as usize] = 1.0;
            i += 1;
            j += 1;
        }
    }
    Ok(Tensor::from_slice(&m).view([len, len]))
}

/// prompt-to-prompt's refinement mapper: the global alignment (Needleman–Wunsch; gap 0, match 1,
/// mismatch −1; ties prefer a target insertion, then a source deletion, then the diagonal) of the source
/// and target token ids (start and end tokens included). Returns, for each of `len` target positions,
/// the source position it reads (−1: a word the source lacks) and its alpha (1 aligned, 0 inserted);
/// positions past the target's tokens continue from its length. Prompts longer than `len` tokens are
/// aligned on their first `len`, the tokens the text encoder reads.
pub fn refinement_mapper(source: &[i64], target: &[i64], len: i64) -> Result<(Vec<i64>, Vec<f32>)> {
    if len < 1 {
        return Err(KernelError::Invalid(format!("refinement: {len} token positions")));
    }
    let (source, target) = (&source[..source.len().min(len as usize)], &target[..target.len().min(len as usize)]);
    let (nx, ny) = (source.len(), target.len());
    let mut score = vec![vec![0i64; ny + 1]; nx + 1];
    let mut trace = vec![vec![0u8; ny + 1]; nx + 1];
    trace[0][1..].fill(1);
    for row in trace.iter_mut().skip(1) {
        row[0] = 2;
    }
    trace[0][0] = 4;
    for i in 1..=nx {
        for j in 1..=ny {
            let left = score[i][j - 1];
            let up = score[i - 1][j];
            let diag = score[i - 1][j - 1] + if source[i - 1] == target[j - 1] { 1 } else { -1 };
            let best = left.max(up).max(diag);
            score[i][j] = best;
            trace[i][j] = if best == left {
                1
            } else if best == up {
                2
            } else {
                3
            };
        }
    }
    let (mut i, mut j) = (nx, ny);
    let mut pairs: Vec<(usize, i64)> = vec![];
    while i > 0 || j > 0 {
        match trace[i][j] {
            3 => {
                i -= 1;
                j -= 1;
                pairs.push((j, i as i64));
            }
            1 => {
                j -= 1;
                pairs.push((j, -1));
            }
            2 => i -= 1,
            _ => break,
        }
    }
    pairs.reverse();
    let l = len as usize;
    let mut mapper = vec![0i64; l];
    let mut alphas = vec![1f32; l];
    for (k, &(_, src)) in pairs.iter().enumerate().take(l) {
        mapper[k] = src;
        alphas[k] = if src == -1 { 0.0 } else { 1.0 };
    }
    // Positions past the target's tokens (one pair per target token) read their own position.
    for (k, m) in mapper.iter_mut().enumerate().skip(pairs.len()) {
        *m = k as i64;
    }
    Ok((mapper, alphas))
}
