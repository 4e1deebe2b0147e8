//! Cross-frame token merging (VidToMe) against a naive loop.

use tch::{Kind, Tensor};
use vidtune_kernels::merge::{bipartite_merge, unmerge};

/// The merge with loops: every source's best destination by cosine similarity (the first of equals), the
/// `r` sources of the highest similarity (the earlier of equals) averaged into their destinations.
fn naive(x: &Tensor, target: i64, r: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let (c, l, ch) = (x.size()[0], x.size()[1] as usize, x.size()[2] as usize);
    let tok = |f: i64, i: usize| -> Vec<f64> { (0..ch).map(|k| x.double_value(&[f, i as i64, k as i64])).collect() };
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-6);
        dot / (n(a) * n(b))
    };
    let dst: Vec<Vec<f64>> = (0..l).map(|i| tok(target, i)).collect();
    let mut src = vec![];
    for f in (0..c).filter(|&f| f != target) {
        for i in 0..l {
            src.push(tok(f, i));
        }
    }
    let best: Vec<(f64, usize)> = src
        .iter()
        .map(|s| {
            let mut b = (f64::NEG_INFINITY, 0);
            for (j, d) in dst.iter().enumerate() {
                let v = cos(s, d);
                if v > b.0 {
                    b = (v, j);
                }
            }
            b
        })
        .collect();
    let mut order: Vec<usize> = (0..src.len()).collect();
    order.sort_by(|&a, &b| best[b].0.partial_cmp(&best[a].0).unwrap());
    let merged: Vec<usize> = order[..r].to_vec();
    let mut kept: Vec<usize> = order[r..].to_vec();
    kept.sort();
    let mut sums = dst.clone();
    let mut counts = vec![1.0; l];
    for &m in &merged {
        let j = best[m].1;
        for k in 0..ch {
            sums[j][k] += src[m][k];
        }
        counts[j] += 1.0;
    }
    let mut tokens: Vec<Vec<f64>> = kept.iter().map(|&k| src[k].clone()).collect();
    tokens.extend(sums.iter().zip(&counts).map(|(s, n)| s.iter().map(|v| v / n).collect::<Vec<_>>()));
    // Where each original token (frame-major) went.
    let mut index = vec![];
    let mut s = 0;
    for f in 0..c {
        for i in 0..l {
            if f == target {
                index.push(kept.len() + i);
            } else {
                index.push(match kept.iter().position(|&k| k == s) {
                    Some(p) => p,
                    None => kept.len() + best[s].1,
                });
                s += 1;
            }
        }
    }
    (tokens, index)
}

#[test]
fn merging_equals_the_loop_and_unmerging_gives_each_token_its_row() {
    tch::manual_seed(3);
    for (c, l, target, r) in [(3i64, 5i64, 1i64, 4usize), (4, 6, 0, 9), (2, 4, 1, 0), (3, 4, 2, 8)] {
        let x = Tensor::randn([c, l, 3], (Kind::Float, tch::Device::Cpu));
        let m = bipartite_merge(&x, target, r as i64).unwrap();
        let (tokens, index) = naive(&x, target, r);
        assert_eq!(m.tokens.size(), [tokens.len() as i64, 3], "{c} frames, r {r}");
        for (i, t) in tokens.iter().enumerate() {
            for (k, v) in t.iter().enumerate() {
                assert!((m.tokens.double_value(&[i as i64, k as i64]) - v).abs() < 1e-5, "{c} frames, r {r}: row {i}");
            }
        }
        let got: Vec<i64> = Vec::try_from(&m.index).unwrap();
        assert_eq!(got, index.iter().map(|&i| i as i64).collect::<Vec<_>>(), "{c} frames, r {r}");
        // Unmerged, the tokens themselves: kept ones come back exactly; the target frame and merged
        // sources as their destination's mean.
        let back = unmerge(&m.tokens, &m, c).unwrap();
        assert_eq!(back.size(), [c, l, 3]);
        assert!(back.get(target).allclose(&m.tokens.narrow(0, m.tokens.size()[0] - l, l), 1e-6, 1e-6, false));
    }
    // Nothing merged: the same tokens, each in its own row.
    let x = Tensor::randn([3, 4, 2], (Kind::Float, tch::Device::Cpu));
    let m = bipartite_merge(&x, 1, 0).unwrap();
    assert!(unmerge(&m.tokens, &m, 3).unwrap().allclose(&x, 1e-6, 1e-6, false));
    assert!(bipartite_merge(&x, 3, 1).unwrap_err().to_string().contains("target frame 3 outside 0..3"));
    assert!(bipartite_merge(&x, 0, 9).unwrap_err().to_string().contains("9 tokens to merge of 8"));
}
