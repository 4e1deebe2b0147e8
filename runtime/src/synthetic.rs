//! Deterministic synthetic clips: a coloured shape moving over a textured background, with its exact
//! ground-truth mask in every frame and a caption in one grammar ("a red circle moving right on a blue
//! striped background"). Tests, benchmarks and the demo use these instead of downloaded footage.
//!
//! Randomness comes from a seeded SplitMix64 of our own, never from libtorch's global generator, so
//! making a clip does not disturb (and is not disturbed by) the seeds of models.

use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use tch::{Kind, Tensor};

/// Subject shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

/// Background textures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texture {
    Plain,
    Stripes,
    Gradient,
    Noise,
}

/// Subject trajectories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    Right,
    Left,
    Bounce,
    Circle,
    Grow,
}

/// Named colours (name, RGB 0–255).
pub const COLORS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [240, 210, 40]),
    ("purple", [150, 60, 200]),
    ("orange", [245, 140, 30]),
    ("white", [240, 240, 240]),
    ("pink", [245, 130, 190]),
];

macro_rules! named {
    ($ty:ident { $($name:literal => $variant:ident),* $(,)? }) => {
        impl $ty {
            /// Every value, in the order messages list them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            /// The script name.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// Parses a script name; the error lists the allowed names.
            pub fn parse(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(Error::Invalid(format!(
                        concat!("unknown ", stringify!($ty), " {:?}; expected one of {}"),
                        s,
                        [$($name),*].map(|n| format!("{n:?}")).join(", ")
                    ))),
                }
            }
        }
    };
}

named!(Shape { "circle" => Circle, "square" => Square, "triangle" => Triangle, "diamond" => Diamond });
named!(Texture { "plain" => Plain, "stripes" => Stripes, "gradient" => Gradient, "noise" => Noise });
named!(Motion { "right" => Right, "left" => Left, "bounce" => Bounce, "circle" => Circle, "grow" => Grow });

/// Everything that defines a synthetic clip. Unset fields are drawn from `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub shape: Option<Shape>,
    pub color: Option<String>,
    pub background: Option<Texture>,
    pub background_color: Option<String>,
    pub motion: Option<Motion>,
    pub frames: usize,
    pub width: i64,
    pub height: i64,
    pub seed: u64,
    /// A grey bar passes in front of the subject (the mask keeps only the visible part).
    pub occluder: bool,
    /// Encode the frame index in binary blocks along the top edge (for exact-sampling tests).
    pub counter: bool,
    pub fps: f64,
    /// The motion's phase in [0, 1) (drawn from `seed` when unset). A clip with one attribute changed and
    /// the source's resolved phase moves on the same path: the toy suite's edit targets.
    pub phase: Option<f64>,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            shape: None,
            color: None,
            background: None,
            background_color: None,
            motion: None,
            frames: 8,
            width: 64,
            height: 64,
            seed: 0,
            occluder: false,
            counter: false,
            fps: 8.0,
            phase: None,
        }
    }
}

/// A generated clip with its ground truth.
#[derive(Debug, Clone)]
pub struct SyntheticClip {
    pub video: Video,
    /// The subject's visible pixels in every frame.
    pub masks: Masks,
    pub caption: String,
    /// The spec with every choice resolved.
    pub spec: SyntheticSpec,
}

/// Looks up a named colour.
pub fn color_rgb(name: &str) -> Result<[u8; 3]> {
    COLORS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown color {name:?}; expected one of {}",
            COLORS.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// SplitMix64: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Pixels drawn per tensor operation when generating a clip (a chunk of frames).
const CHUNK_PIXELS: i64 = 1 << 22;

/// Generates the clip described by `spec`.
pub fn synthetic_clip(spec: &SyntheticSpec) -> Result<SyntheticClip> {
    if spec.frames == 0 {
        return Err(Error::Invalid("frames must be at least 1 (got 0)".into()));
    }
    if spec.width < 16 || spec.height < 16 {
        return Err(Error::Invalid(format!("size must be at least 16x16, got {}x{}", spec.width, spec.height)));
    }
    // Frames and masks in f32, plus the per-frame working tensors.
    crate::memory::ensure_fits(
        &format!("a synthetic clip of {} frames at {}x{}", spec.frames, spec.width, spec.height),
        crate::memory::bytes_of(
            &[i64::try_from(spec.frames).unwrap_or(i64::MAX).saturating_add(4), 4, spec.width, spec.height],
            4.0,
        ),
        tch::Device::Cpu,
    )?;
    let mut rng = Rng(spec.seed ^ 0x5EED_C11F);
    let mut spec = spec.clone();
    let shape = *spec.shape.get_or_insert_with(|| rng.pick(Shape::ALL));
    let color = spec.color.get_or_insert_with(|| rng.pick(&COLORS).0.to_string()).clone();
    let background = *spec.background.get_or_insert_with(|| rng.pick(Texture::ALL));
    let bg_color = spec
        .background_color
        .get_or_insert_with(|| loop {
            let c = rng.pick(&COLORS).0;
            if c != color {
                break c.to_string();
            }
        })
        .clone();
    let motion = *spec.motion.get_or_insert_with(|| rng.pick(Motion::ALL));
    let (fg, bg) = (color_rgb(&color)?, color_rgb(&bg_color)?);
    let (w, h, n) = (spec.width, spec.height, spec.frames as i64);
    let ys = (Tensor::arange(h, (Kind::Float, tch::Device::Cpu)) + 0.5).view([h, 1]);
    let xs = (Tensor::arange(w, (Kind::Float, tch::Device::Cpu)) + 0.5).view([1, w]);
    let background_img = render_background(background, bg, &xs, &ys, &mut rng);
    let drawn = rng.uniform();
    let phase = *spec.phase.get_or_insert(drawn);
    let mut frames = Vec::new();
    let mut masks = Vec::new();
    // Quick even for long clips: no bar, but cancellable all the same.
    let mut progress =
        crate::progress::quietly(|| crate::progress::Progress::new("synthetic clip", n as u64).unit("frames"));
    // Frames are drawn a chunk at a time, each step one tensor operation over the whole chunk: a
    // 1500-frame clip is a few hundred operations, not tens of thousands of small ones (which are slow
    // when other processes share the cores). The per-frame scalars become `[k, 1, 1]` columns in f32,
    // the precision the scalars had inside each operation, so the pixels are those of frame-by-frame.
    let chunk = (CHUNK_PIXELS / (w * h)).clamp(1, n);
    let mut first = 0;
    while first < n {
        let k = chunk.min(n - first);
        let ts: Vec<f64> = (first..first + k).map(|f| if n > 1 { f as f64 / (n - 1) as f64 } else { 0.0 }).collect();
        let path: Vec<(f64, f64, f64)> = ts.iter().map(|&t| trajectory(motion, t, phase, w as f64, h as f64)).collect();
        let column = |v: &dyn Fn(usize) -> f64| {
            Tensor::from_slice(&(0..k as usize).map(|i| v(i) as f32).collect::<Vec<f32>>()).view([k, 1, 1])
        };
        let (cx, cy) = (column(&|i| path[i].0), column(&|i| path[i].1));
        let (dx, dy) = (&xs - &cx, &ys - &cy);
        let inside = shape_mask(shape, &dx, &dy, &|f| column(&|i| f(path[i].2)));
        // Gentle shading across the subject so it is not a flat decal.
        let shade = ((&dx * 0.25 - &dy * 0.35) / column(&|i| path[i].2)).clamp(-1.0, 1.0) * 0.12 + 1.0;
        let subject = rgb_tensor(fg) * shade.unsqueeze(1);
        let mut frame = background_img.unsqueeze(0).where_self(&inside.logical_not().unsqueeze(1), &subject);
        let mut visible = inside;
        if spec.occluder {
            let occ = (&xs - column(&|i| w as f64 * (0.85 - 0.7 * ts[i]))).abs().le(w as f64 * 0.06);
            frame = frame.where_self(&occ.logical_not().unsqueeze(1), &rgb_tensor([128, 128, 128]));
            visible = visible.logical_and(&occ.logical_not());
        }
        if spec.counter {
            frame = frame.copy();
            for i in 0..k {
                draw_counter(&frame.get(i), first + i, w, h);
            }
            visible = visible.logical_and(&ys.expand([h, w], false).ge((h / 8) as f64));
        }
        // Quantised to 8-bit levels, so a clip saved losslessly (PNG) reads back identical.
        frames.push((frame.clamp(0.0, 1.0) * 255.0).round() / 127.5 - 1.0);
        masks.push(visible.to_kind(Kind::Float).unsqueeze(1));
        for _ in 0..k {
            progress.step()?;
        }
        first += k;
    }
    progress.finish();
    let caption = caption(shape, &color, motion, background, &bg_color);
    let video = Video::new(Tensor::cat(&frames, 0), spec.fps)?;
    let masks = Masks::new(Tensor::cat(&masks, 0))?;
    Ok(SyntheticClip { video, masks, caption, spec })
}

/// The caption of a clip, in the world's one grammar.
pub fn caption(shape: Shape, color: &str, motion: Motion, background: Texture, bg_color: &str) -> String {
    let moving = match motion {
        Motion::Right => "moving right",
        Motion::Left => "moving left",
        Motion::Bounce => "bouncing",
        Motion::Circle => "moving in a circle",
        Motion::Grow => "growing",
    };
    let texture = match background {
        Texture::Plain => "plain",
        Texture::Stripes => "striped",
        Texture::Gradient => "gradient",
        Texture::Noise => "textured",
    };
    format!("a {color} {} {moving} on a {bg_color} {texture} background", shape.name())
}

fn rgb_tensor(c: [u8; 3]) -> Tensor {
    Tensor::from_slice(&[c[0] as f32 / 255.0, c[1] as f32 / 255.0, c[2] as f32 / 255.0]).view([3, 1, 1])
}

/// Centre and radius of the subject at time `t` in [0, 1].
fn trajectory(motion: Motion, t: f64, phase: f64, w: f64, h: f64) -> (f64, f64, f64) {
    let r = 0.16 * w.min(h);
    let tau = std::f64::consts::TAU;
    match motion {
        Motion::Right => (w * (0.22 + 0.56 * t), h * (0.55 + 0.05 * (tau * (t + phase)).sin()), r),
        Motion::Left => (w * (0.78 - 0.56 * t), h * (0.55 + 0.05 * (tau * (t + phase)).sin()), r),
        Motion::Bounce => (w * (0.25 + 0.5 * t), h * (0.75 - 0.45 * (tau * t).sin().abs()), r),
        Motion::Circle => {
            let a = tau * (t * 0.9 + phase);
            (w * (0.5 + 0.25 * a.cos()), h * (0.55 + 0.22 * a.sin()), r)
        }
        Motion::Grow => (w * 0.5, h * 0.55, r * (0.6 + 0.8 * t)),
    }
}

/// Where the subject is, `[k, H, W]`, from the offsets to its centre (`dx` `[k, 1, W]`, `dy` `[k, H, 1]`);
/// `per_frame` turns a function of the radius into a `[k, 1, 1]` column.
fn shape_mask(shape: Shape, dx: &Tensor, dy: &Tensor, per_frame: &dyn Fn(&dyn Fn(f64) -> f64) -> Tensor) -> Tensor {
    match shape {
        Shape::Circle => (dx.square() + dy.square()).le_tensor(&per_frame(&|r| r * r)),
        Shape::Square => {
            let s = per_frame(&|r| r * 0.886); // same area as the circle
            dx.abs().le_tensor(&s).logical_and(&dy.abs().le_tensor(&s))
        }
        Shape::Diamond => (dx.abs() + dy.abs()).le_tensor(&per_frame(&|r| r * 1.253)),
        Shape::Triangle => {
            // Equilateral, pointing up, centroid at the centre, circumradius 1.3 r:
            // apex (0, -R), base corners (±R·√3/2, R/2); inside = below no edge line.
            let rr = per_frame(&|r| r * 1.3);
            let s3 = 3f64.sqrt();
            let right = (dx * s3 - dy).le_tensor(&rr);
            let left = (dx * -s3 - dy).le_tensor(&rr);
            dy.le_tensor(&per_frame(&|r| r * 1.3 * 0.5)).logical_and(&right).logical_and(&left)
        }
    }
}

fn render_background(texture: Texture, c: [u8; 3], xs: &Tensor, ys: &Tensor, rng: &mut Rng) -> Tensor {
    let (h, w) = (ys.size()[0], xs.size()[1]);
    let base = rgb_tensor(c);
    let light: Tensor = match texture {
        Texture::Plain => Tensor::ones([h, w], (Kind::Float, tch::Device::Cpu)),
        Texture::Stripes => {
            let period = (w.min(h) as f64 / 6.0).max(4.0);
            let angle = rng.uniform() * std::f64::consts::PI;
            let u = xs * angle.cos() + ys * angle.sin();
            (u / period * std::f64::consts::TAU).sin().ge(0.0).to_kind(Kind::Float) * 0.45 + 0.75
        }
        Texture::Gradient => {
            let v = ys / h as f64;
            v * -0.6 + 1.15
        }
        Texture::Noise => {
            let cells = 6i64;
            let values: Vec<f32> = (0..cells * cells).map(|_| rng.uniform() as f32).collect();
            let grid = Tensor::from_slice(&values).view([1, 1, cells, cells]);
            let smooth = grid.upsample_bicubic2d([h, w], false, None, None).view([h, w]);
            smooth * 0.6 + 0.7
        }
    };
    (base * light.unsqueeze(0)).clamp(0.0, 1.0)
}

/// Draws the frame index in 8 binary blocks along the top edge (white = 1), on a black band, into `frame`
/// (`[3, H, W]`, in place).
fn draw_counter(frame: &Tensor, index: i64, w: i64, h: i64) {
    let band = (h / 8).max(2);
    let _ = frame.narrow(1, 0, band).fill_(0.0);
    let block = w / 8;
    for bit in 0..8 {
        if (index >> (7 - bit)) & 1 == 1 {
            let _ = frame.narrow(1, 1, band - 2).narrow(2, bit * block + 1, block - 2).fill_(1.0);
        }
    }
}

/// Reads back the frame index drawn by `counter` clips from a `[3, H, W]` frame in [−1, 1].
pub fn read_counter(frame: &Tensor) -> i64 {
    let (h, w) = (frame.size()[1], frame.size()[2]);
    let band = (h / 8).max(2);
    let block = w / 8;
    (0..8).fold(0, |acc, bit| {
        let cell = frame.narrow(1, 1, band - 2).narrow(2, bit * block + 2, block - 4);
        let on = cell.mean(Kind::Float).double_value(&[]) > 0.0;
        (acc << 1) | on as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_masks_exact() {
        let spec = SyntheticSpec { frames: 4, width: 48, height: 32, seed: 7, ..Default::default() };
        let a = synthetic_clip(&spec).unwrap();
        let b = synthetic_clip(&spec).unwrap();
        assert!(a.video.frames().equal(b.video.frames()));
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.masks.tensor().size(), vec![4, 1, 32, 48]);
        // Every masked pixel has the subject's hue family: it differs from the background there.
        let area = a.masks.tensor().sum(Kind::Float).double_value(&[]);
        assert!(area > 4.0 * 32.0 * 48.0 * 0.03, "subject too small: {area}");
    }

    #[test]
    fn counter_reads_back() {
        let spec = SyntheticSpec { frames: 12, width: 64, height: 64, counter: true, ..Default::default() };
        let clip = synthetic_clip(&spec).unwrap();
        for i in 0..12 {
            assert_eq!(read_counter(&clip.video.frames().get(i)), i);
        }
    }

    #[test]
    fn unknown_names_list_choices() {
        let e = Shape::parse("hexagon").unwrap_err().to_string();
        assert!(e.contains("\"circle\"") && e.contains("hexagon"), "{e}");
        assert!(color_rgb("mauve").unwrap_err().to_string().contains("\"red\""));
    }
}

/// What a mask motion sequence is made of: a shape moving along one of the synthetic clips' motions.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskSequenceSpec {
    pub shape: Shape,
    pub motion: Motion,
    pub frames: usize,
    pub width: i64,
    pub height: i64,
    pub seed: u64,
}

/// A drawn mask motion sequence (dynamic mask guidance generates from these): the masks of the synthetic
/// clip with that shape, motion and seed.
pub fn mask_sequence(spec: &MaskSequenceSpec) -> Result<Masks> {
    let clip = synthetic_clip(&SyntheticSpec {
        shape: Some(spec.shape),
        motion: Some(spec.motion),
        frames: spec.frames,
        width: spec.width,
        height: spec.height,
        seed: spec.seed,
        ..Default::default()
    })?;
    Masks::new(clip.masks.tensor().shallow_clone())
}
