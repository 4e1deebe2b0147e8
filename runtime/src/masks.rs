//! The `Masks` value: one mask per frame, `[F, 1, H, W]` float with values in [0, 1] (binary masks hold
//! exactly 0 and 1) on the CPU.

use crate::error::{Error, Result};
use crate::media::Video;
use tch::{Kind, Tensor};

/// A mask sequence. Cloning is cheap (shared storage; never modified in place).
#[derive(Debug)]
pub struct Masks {
    data: Tensor,
}

impl Clone for Masks {
    fn clone(&self) -> Self {
        Masks { data: self.data.shallow_clone() }
    }
}

impl Masks {
    /// Wraps `[F, 1, H, W]` values in [0, 1].
    pub fn new(data: Tensor) -> Result<Self> {
        let size = data.size();
        if size.len() != 4 || size[1] != 1 || size[0] == 0 || size[2] == 0 || size[3] == 0 {
            return Err(Error::Invalid(format!("masks are [F, 1, H, W] with F, H, W > 0, got {size:?}")));
        }
        Ok(Masks { data: data.to_device(tch::Device::Cpu).to_kind(Kind::Float).clamp(0.0, 1.0) })
    }

    /// The values, `[F, 1, H, W]`.
    pub fn tensor(&self) -> &Tensor {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn width(&self) -> i64 {
        self.data.size()[3]
    }

    pub fn height(&self) -> i64 {
        self.data.size()[2]
    }

    /// Fraction of each frame covered, `[F]`.
    pub fn area(&self) -> Vec<f64> {
        Vec::<f64>::try_from(self.data.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)).unwrap_or_default()
    }

    /// Errors unless `video` has as many frames as the masks, at the same size.
    pub fn check_matches(&self, video: &Video) -> Result<()> {
        if self.len() != video.len() || self.width() != video.width() || self.height() != video.height() {
            return Err(Error::Invalid(format!(
                "masks ({} frames, {}x{}) do not match the video ({} frames, {}x{})",
                self.len(),
                self.width(),
                self.height(),
                video.len(),
                video.width(),
                video.height()
            )));
        }
        Ok(())
    }

    /// A preview: the video with the masked region tinted (and the rest dimmed).
    pub fn overlay(&self, video: &Video) -> Result<Video> {
        self.check_matches(video)?;
        let m = self.data.gt(0.5).to_kind(Kind::Float);
        let tint = Tensor::from_slice(&[0.2f32, 1.0, 0.3]).view([1, 3, 1, 1]);
        let lit = video.frames() * 0.55 + tint * 0.45;
        let dim = video.frames() * 0.7 - 0.3;
        Video::new(&lit * &m + dim * (1.0 - &m), video.fps())
    }
}

impl std::fmt::Display for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let area = self.area();
        let mean = 100.0 * area.iter().sum::<f64>() / area.len().max(1) as f64;
        write!(f, "Masks({} frames, {}x{}, mean area {mean:.1}%)", self.len(), self.width(), self.height())
    }
}
