//! Gaussian mixture colour models with full covariances, as GrabCut uses them (Rother et al., 2004):
//! initialised by k-means, refined by assigning each pixel to its most likely component and refitting.

/// Components per model (GrabCut's K).
pub const COMPONENTS: usize = 5;
/// Added to covariance diagonals (in 8-bit RGB units²) so flat regions stay well-conditioned.
const REGULARISATION: f64 = 4.0;
/// Cap on a colour's negative log-likelihood (nats).
pub const MAX_NLL: f64 = 40.0;

#[derive(Debug, Clone)]
struct Component {
    weight: f64,
    mean: [f64; 3],
    /// Inverse covariance (row-major 3×3).
    inv: [f64; 9],
    /// `ln(weight) − ½ ln det Σ − 3/2 ln 2π`.
    log_norm: f64,
}

/// A mixture of up to [`COMPONENTS`] Gaussians over RGB colours.
#[derive(Debug, Clone)]
pub struct Gmm {
    components: Vec<Component>,
}

fn dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3).map(|k| (a[k] - b[k]).powi(2)).sum()
}

fn invert3(m: &[f64; 9]) -> Option<([f64; 9], f64)> {
    let det =
        m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
    if det.abs() < 1e-12 {
        return None;
    }
    let inv = [
        (m[4] * m[8] - m[5] * m[7]) / det,
        (m[2] * m[7] - m[1] * m[8]) / det,
        (m[1] * m[5] - m[2] * m[4]) / det,
        (m[5] * m[6] - m[3] * m[8]) / det,
        (m[0] * m[8] - m[2] * m[6]) / det,
        (m[2] * m[3] - m[0] * m[5]) / det,
        (m[3] * m[7] - m[4] * m[6]) / det,
        (m[1] * m[6] - m[0] * m[7]) / det,
        (m[0] * m[4] - m[1] * m[3]) / det,
    ];
    Some((inv, det))
}

impl Component {
    fn log_density(&self, x: &[f64; 3]) -> f64 {
        let d = [x[0] - self.mean[0], x[1] - self.mean[1], x[2] - self.mean[2]];
        let i = &self.inv;
        let q = d[0] * (i[0] * d[0] + i[1] * d[1] + i[2] * d[2])
            + d[1] * (i[3] * d[0] + i[4] * d[1] + i[5] * d[2])
            + d[2] * (i[6] * d[0] + i[7] * d[1] + i[8] * d[2]);
        self.log_norm - 0.5 * q
    }

    /// The maximum-likelihood Gaussian of `samples` (with `weight` its share of all samples).
    fn fit(samples: &[[f64; 3]], weight: f64) -> Option<Component> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len() as f64;
        let mut mean = [0.0; 3];
        for s in samples {
            (0..3).for_each(|k| mean[k] += s[k] / n);
        }
        let mut cov = [0.0; 9];
        for s in samples {
            for r in 0..3 {
                for c in 0..3 {
                    cov[r * 3 + c] += (s[r] - mean[r]) * (s[c] - mean[c]) / n;
                }
            }
        }
        (0..3).for_each(|k| cov[k * 4] += REGULARISATION);
        let (inv, det) = invert3(&cov)?;
        let log_norm = weight.ln() - 0.5 * det.ln() - 1.5 * (2.0 * std::f64::consts::PI).ln();
        Some(Component { weight, mean, inv, log_norm })
    }
}

/// Deterministic k-means++ seeding (a fixed-seed generator) followed by Lloyd iterations.
fn kmeans(samples: &[[f64; 3]], k: usize) -> Vec<usize> {
    let n = samples.len();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centres = vec![samples[n / 2]];
    let mut nearest: Vec<f64> = samples.iter().map(|s| dist2(s, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = uniform() * total;
        let mut pick = n - 1;
        for (i, d) in nearest.iter().enumerate() {
            target -= d;
            if target <= 0.0 {
                pick = i;
                break;
            }
        }
        centres.push(samples[pick]);
        for (i, s) in samples.iter().enumerate() {
            nearest[i] = nearest[i].min(dist2(s, &samples[pick]));
        }
    }
    let mut labels = vec![0usize; n];
    for _ in 0..10 {
        let mut changed = false;
        for (i, s) in samples.iter().enumerate() {
            let best = (0..centres.len())
                .min_by(|&a, &b| dist2(s, &centres[a]).total_cmp(&dist2(s, &centres[b])))
                .unwrap_or(0);
            if labels[i] != best {
                labels[i] = best;
                changed = true;
            }
        }
        let mut sums = vec![([0.0; 3], 0.0); centres.len()];
        for (s, &l) in samples.iter().zip(&labels) {
            (0..3).for_each(|k| sums[l].0[k] += s[k]);
            sums[l].1 += 1.0;
        }
        for (c, (sum, count)) in centres.iter_mut().zip(&sums) {
            if *count > 0.0 {
                *c = [sum[0] / count, sum[1] / count, sum[2] / count];
            }
        }
        if !changed {
            break;
        }
    }
    labels
}

impl Gmm {
    fn from_labels(samples: &[[f64; 3]], labels: &[usize], k: usize) -> Gmm {
        let mut groups: Vec<Vec<[f64; 3]>> = vec![vec![]; k];
        for (s, &l) in samples.iter().zip(labels) {
            groups[l].push(*s);
        }
        let n = samples.len() as f64;
        let components = groups.iter().filter_map(|g| Component::fit(g, g.len() as f64 / n)).collect();
        Gmm { components }
    }

    /// A model of `samples` (k-means initialisation, then one assign-and-refit step as GrabCut).
    /// An empty sample set gives a model under which every colour is equally unlikely.
    pub fn fit(samples: &[[f64; 3]]) -> Gmm {
        if samples.is_empty() {
            return Gmm { components: vec![] };
        }
        let k = COMPONENTS.min(samples.len());
        let labels = kmeans(samples, k);
        Gmm::from_labels(samples, &labels, k).refit(samples)
    }

    /// GrabCut's learning step: each sample to its most likely component, then every component refitted.
    pub fn refit(&self, samples: &[[f64; 3]]) -> Gmm {
        if self.components.is_empty() || samples.is_empty() {
            return Gmm::fit(samples);
        }
        let labels: Vec<usize> = samples
            .iter()
            .map(|s| {
                (0..self.components.len())
                    .max_by(|&a, &b| self.components[a].log_density(s).total_cmp(&self.components[b].log_density(s)))
                    .unwrap_or(0)
            })
            .collect();
        Gmm::from_labels(samples, &labels, self.components.len())
    }

    /// `−ln p(x)` under the mixture, capped at [`MAX_NLL`].
    pub fn nll(&self, x: &[f64; 3]) -> f64 {
        let logs: Vec<f64> = self.components.iter().map(|c| c.log_density(x)).collect();
        let Some(max) = logs.iter().copied().reduce(f64::max) else {
            return MAX_NLL;
        };
        let lse = max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        (-lse).min(MAX_NLL)
    }

    /// The mixture's weights sum to one (a check for tests).
    pub fn total_weight(&self) -> f64 {
        self.components.iter().map(|c| c.weight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_gaussian_is_recovered_and_scores_like_its_density() {
        // A 3-D grid symmetric around (100, 150, 200): mean exact, variance known per axis.
        let mut s = vec![];
        for a in -2..=2 {
            for b in -2..=2 {
                for c in -2..=2 {
                    s.push([100.0 + 10.0 * a as f64, 150.0 + 5.0 * b as f64, 200.0 + 2.0 * c as f64]);
                }
            }
        }
        let one = Component::fit(&s, 1.0).unwrap();
        assert!(dist2(&one.mean, &[100.0, 150.0, 200.0]) < 1e-18);
        // Per-axis variance of {-2..2}·step is 2·step², plus the regularisation.
        let var = [200.0 + REGULARISATION, 50.0 + REGULARISATION, 8.0 + REGULARISATION];
        let want = 0.5 * var.iter().map(|v| v.ln()).sum::<f64>() + 1.5 * (2.0 * std::f64::consts::PI).ln();
        assert!((-one.log_density(&[100.0, 150.0, 200.0]) - want).abs() < 1e-9);
        let x = [110.0, 150.0, 200.0];
        assert!((-one.log_density(&x) - (want + 0.5 * 100.0 / var[0])).abs() < 1e-9);
    }

    #[test]
    fn mixtures_separate_clusters_and_weights_sum_to_one() {
        let mut s = vec![];
        for i in 0..200 {
            let j = (i % 7) as f64;
            s.push(if i % 2 == 0 { [30.0 + j, 40.0 - j, 50.0] } else { [200.0 - j, 190.0, 180.0 + j] });
        }
        let g = Gmm::fit(&s);
        assert!((g.total_weight() - 1.0).abs() < 1e-9);
        // Both clusters are likely, the colour between them is not.
        assert!(g.nll(&[33.0, 37.0, 50.0]) < 12.0 && g.nll(&[197.0, 190.0, 183.0]) < 12.0);
        assert!(g.nll(&[115.0, 115.0, 115.0]) > 30.0);
        assert_eq!(Gmm::fit(&[]).nll(&[1.0, 2.0, 3.0]), MAX_NLL);
    }
}
