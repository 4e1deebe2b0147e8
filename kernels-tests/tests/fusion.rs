//! Attention fusion and prompt-to-prompt controls against naive loops.

use tch::{Kind, Tensor};
use vidtune_kernels::fusion::{
    blend_mask, fuse_self, refine_cross, refinement_mapper, replace_cross, replacement_mapper, reweight,
};

fn probs(seed: i64, shape: &[i64]) -> Tensor {
    tch::manual_seed(seed);
    Tensor::rand(shape, (Kind::Float, tch::Device::Cpu)).softmax(-1, Kind::Float)
}

fn at(t: &Tensor, idx: &[i64]) -> f64 {
    t.double_value(idx)
}

/// The blending mask as FateZero's `SpatialBlender` computes it, with loops.
fn naive_blend_mask(
    maps: &[Tensor],
    (hs, ws): (i64, i64),
    tokens: &[i64],
    (h, w): (i64, i64),
    th: f64,
) -> Vec<Vec<f32>> {
    let n = maps[0].size()[0];
    let heads = maps[0].size()[1];
    let mut out = vec![];
    for f in 0..n {
        // Σ tokens, mean over (layer, head).
        let mut mean = vec![0f64; (hs * ws) as usize];
        for m in maps {
            for hd in 0..heads {
                for s in 0..hs * ws {
                    let v: f64 = tokens.iter().map(|&k| at(m, &[f, hd, s, k])).sum();
                    mean[s as usize] += v / (maps.len() as i64 * heads) as f64;
                }
            }
        }
        // 3 × 3 max pool, stride 1, padding 1 (padding never wins).
        let mut pooled = vec![0f64; (hs * ws) as usize];
        for y in 0..hs {
            for x in 0..ws {
                let mut best = f64::NEG_INFINITY;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (yy, xx) = (y + dy, x + dx);
                        if (0..hs).contains(&yy) && (0..ws).contains(&xx) {
                            best = best.max(mean[(yy * ws + xx) as usize]);
                        }
                    }
                }
                pooled[(y * ws + x) as usize] = best;
            }
        }
        // Nearest: source index ⌊dst · in / out⌋.
        let mut resized = vec![0f64; (h * w) as usize];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = ((y * hs) / h, (x * ws) / w);
                resized[(y * w + x) as usize] = pooled[(sy * ws + sx) as usize];
            }
        }
        let peak = resized.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        out.push(resized.iter().map(|v| if v / peak > th { 1.0 } else { 0.0 }).collect());
    }
    out
}

#[test]
fn the_blend_mask_equals_the_loop_at_every_target_size() {
    let maps = vec![probs(1, &[3, 2, 16, 7]), probs(2, &[3, 2, 16, 7])];
    for (out, tokens, th) in
        [((4, 4), vec![2], 0.3), ((8, 8), vec![2, 3], 0.5), ((2, 2), vec![5], 0.2), ((8, 4), vec![1], 0.7)]
    {
        let got = blend_mask(&maps, (4, 4), &tokens, out, th).unwrap();
        assert_eq!(got.size(), [3, out.0 * out.1]);
        let want = naive_blend_mask(&maps, (4, 4), &tokens, out, th);
        for (f, row) in want.iter().enumerate() {
            let g: Vec<f32> = Vec::try_from(got.get(f as i64)).unwrap();
            assert_eq!(&g, row, "frame {f}, {out:?}, tokens {tokens:?}, threshold {th}");
        }
        // Each frame's strongest place is in its mask (the division by its own maximum).
        assert!(got.sum_dim_intlist(1, false, Kind::Float).min().double_value(&[]) >= 1.0);
    }
    // A word no map attends to: 0/0, so an empty mask, as in the reference.
    let zero = Tensor::zeros([1, 1, 4, 3], (Kind::Float, tch::Device::Cpu));
    let m = blend_mask(&[zero], (2, 2), &[1], (2, 2), 0.3).unwrap();
    assert_eq!(m.sum(Kind::Float).double_value(&[]), 0.0);
    assert!(blend_mask(&maps, (4, 4), &[7], (4, 4), 0.3).unwrap_err().to_string().contains("outside 0..7"));
    assert!(blend_mask(&maps, (3, 3), &[1], (4, 4), 0.3).is_err());
}

#[test]
fn self_fusion_takes_edit_rows_inside_the_mask_and_source_rows_outside() {
    let (edit, source) = (probs(3, &[2, 2, 6, 12]), probs(4, &[2, 2, 6, 12]));
    let mask = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 0., 0., 0., 1., 0., 1., 1.]).view([2, 6]);
    let got = fuse_self(&edit, &source, Some(&mask)).unwrap();
    for n in 0..2 {
        for h in 0..2 {
            for s in 0..6 {
                let m = at(&mask, &[n, s]);
                for t in 0..12 {
                    let want = if m > 0.5 { at(&edit, &[n, h, s, t]) } else { at(&source, &[n, h, s, t]) };
                    assert_eq!(at(&got, &[n, h, s, t]), want);
                }
            }
        }
    }
    assert!(fuse_self(&edit, &source, None).unwrap().equal(&source));
    let e = fuse_self(&edit, &probs(5, &[2, 2, 6, 6]), None).unwrap_err().to_string();
    assert!(e.contains("the same modules and frames"), "{e}");
}

#[test]
fn cross_controls_equal_their_loops() {
    let (source, edit) = (probs(6, &[2, 3, 5, 6]), probs(7, &[2, 3, 5, 6]));
    tch::manual_seed(8);
    let mapper = Tensor::rand([6, 6], (Kind::Float, tch::Device::Cpu));
    let swapped = replace_cross(&source, &mapper).unwrap();
    let map = [0i64, 2, -1, 1, 4, 5];
    let alphas = [1f32, 1., 0., 1., 0., 1.];
    let refined = refine_cross(&source, &edit, &map, &alphas).unwrap();
    let weights = [1f32, 2.5, 1., 0.5, 1., 1.];
    let scaled = reweight(&edit, &weights).unwrap();
    for idx in [[0, 0, 0], [1, 2, 4], [0, 1, 3], [1, 0, 2]] {
        let [n, h, s] = idx;
        for t in 0..6 {
            let sw: f64 = (0..6).map(|w| at(&source, &[n, h, s, w]) * at(&mapper, &[w, t])).sum();
            assert!((at(&swapped, &[n, h, s, t]) - sw).abs() < 1e-6);
            let col = if map[t as usize] < 0 { 5 } else { map[t as usize] };
            let a = alphas[t as usize] as f64;
            let rf = at(&source, &[n, h, s, col]) * a + at(&edit, &[n, h, s, t]) * (1.0 - a);
            assert!((at(&refined, &[n, h, s, t]) - rf).abs() < 1e-6);
            assert!((at(&scaled, &[n, h, s, t]) - at(&edit, &[n, h, s, t]) * weights[t as usize] as f64).abs() < 1e-6);
        }
    }
    assert!(reweight(&edit, &[1.0; 5]).unwrap_err().to_string().contains("6 keys for a map over 5 tokens"));
    assert!(refine_cross(&source, &edit, &[0; 5], &[1.0; 5]).is_err());
}

#[test]
fn the_word_swap_mapper_is_prompt_to_prompts() {
    // "a cat on grass" → "a dog on grass", one token a word: the identity with cat's row sent to dog.
    let m = replacement_mapper(&[1, 1, 1, 1], &[1, 1, 1, 1], &[false, true, false, false], 8).unwrap();
    assert!(m.equal(&Tensor::eye(8, (Kind::Float, tch::Device::Cpu))));
    // A one-token word swapped for a two-token one: its map is shared by both; after the swap each
    // position maps to itself, as the reference writes it.
    let m = replacement_mapper(&[1, 1, 1], &[1, 2, 1], &[false, true, false], 7).unwrap();
    let rows: Vec<Vec<f32>> = (0..7).map(|i| Vec::try_from(m.get(i)).unwrap()).collect();
    assert_eq!(rows[0], [1., 0., 0., 0., 0., 0., 0.]);
    assert_eq!(rows[1], [0., 1., 0., 0., 0., 0., 0.]);
    assert_eq!(rows[2], [0., 0., 0.5, 0.5, 0., 0., 0.]);
    assert_eq!(rows[4], [0., 0., 0., 0., 1., 0., 0.]);
    assert_eq!(rows[3], [0.; 7]);
    // Two swapped tokens of the same length pair token for token.
    let m = replacement_mapper(&[2], &[2], &[true], 4).unwrap();
    assert_eq!(Vec::<f32>::try_from(m.get(1)).unwrap(), [0., 1., 0., 0.]);
    assert_eq!(Vec::<f32>::try_from(m.get(2)).unwrap(), [0., 0., 1., 0.]);
    assert!(replacement_mapper(&[1, 1], &[1], &[false], 4).unwrap_err().to_string().contains("same number of words"));
}

#[test]
fn the_refinement_mapper_aligns_tokens_as_prompt_to_prompt_does() {
    // "<s> a cat </s>" → "<s> a cat dog </s>": the new token reads nothing of the source.
    let (m, a) = refinement_mapper(&[100, 1, 2, 101], &[100, 1, 2, 3, 101], 8).unwrap();
    assert_eq!(m, [0, 1, 2, -1, 3, 5, 6, 7]);
    assert_eq!(a, [1., 1., 1., 0., 1., 1., 1., 1.]);
    // A swapped token (gap 0 beats a mismatch): the source's is dropped and the target's inserted.
    let (m, a) = refinement_mapper(&[100, 1, 2, 101], &[100, 1, 9, 101], 6).unwrap();
    assert_eq!(m, [0, 1, -1, 3, 4, 5]);
    assert_eq!(a, [1., 1., 0., 1., 1., 1.]);
    // The same prompt maps to itself.
    let (m, a) = refinement_mapper(&[100, 5, 6, 7, 101], &[100, 5, 6, 7, 101], 7).unwrap();
    assert_eq!(m, [0, 1, 2, 3, 4, 5, 6]);
    assert!(a.iter().all(|&x| x == 1.0));
    // Each aligned pair holds the same token.
    let (x, y) = ([100, 4, 8, 15, 16, 23, 101], [100, 8, 15, 42, 16, 101]);
    let (m, _) = refinement_mapper(&x, &y, 10).unwrap();
    for (j, &i) in m.iter().take(y.len()).enumerate() {
        if i >= 0 {
            assert_eq!(x[i as usize], y[j], "{m:?}");
        }
    }
    // Prompts past the encoder's length are aligned on the tokens it reads.
    let long: Vec<i64> = (0..12).collect();
    let (m, a) = refinement_mapper(&long, &long[..10], 8).unwrap();
    assert_eq!(m, (0..8).collect::<Vec<i64>>());
    assert!(a.iter().all(|&x| x == 1.0));
    assert!(refinement_mapper(&[1], &[1], 0).is_err());
}
