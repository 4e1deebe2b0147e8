//! Attention stores (FateZero, Qi et al., ICCV 2023, §3.2): during the DDIM inversion with the source
//! prompt (`invert(…, #{store})`), every UNet call keeps the probabilities of the chosen self-attention
//! (`attn1`, whatever keys its module gathers: sparse-causal, first-frame, …) and cross-attention (`attn2`)
//! layers at the chosen resolutions, per head, in half precision: `[F, heads, S, T]` per layer per step, in
//! call order — on the CPU, or with `disk` in a file per step. By default every resolution but the largest
//! is kept — FateZero keeps the maps of at most 32² queries at 512², whose 64² level would take most of the
//! memory. The bytes are estimated before the inversion starts and refused above the memory (or disk
//! space) available ([`store_bytes`]). [`super::fusion`] reads them.

use super::reweight::cond_rows;
use crate::config::UNet2DConditionConfig;
use crate::error::{Error, Result};
use crate::models::attention_processor::{MapControl, Site};
use crate::video::conditioning::MapsLoop;
use crate::video::processors::ModuleSpec;
use crate::video::VideoModel;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// What `invert` keeps of the attention maps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Keep the `attn1` maps (the self-attention fusion blends them).
    pub self_attn: bool,
    /// Keep the `attn2` maps (the cross-attention fusion and the blend mask read them).
    pub cross: bool,
    /// The latent sides (tokens per side) whose layers are kept; `None`: every level but the largest.
    pub resolutions: Option<Vec<i64>>,
    /// Keep the maps on disk, a file per step (read back one step at a time), instead of in memory.
    pub disk: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { self_attn: true, cross: true, resolutions: None, disk: false }
    }
}

impl StoreOptions {
    /// The sides kept for a UNet whose levels have `sides` (largest first); an error naming the levels for a
    /// side that is not one of them.
    pub fn sides(&self, sides: &[i64]) -> Result<Vec<i64>> {
        if !self.self_attn && !self.cross {
            return Err(Error::Invalid("invert store: keeps nothing; set self or cross to true".into()));
        }
        match &self.resolutions {
            None if sides.len() > 1 => Ok(sides[1..].to_vec()),
            None => Ok(sides.to_vec()),
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::Invalid("invert store: resolutions is empty".into()));
                }
                for r in list {
                    if !sides.contains(r) {
                        let levels: Vec<String> = sides.iter().map(|s| s.to_string()).collect();
                        return Err(Error::Invalid(format!(
                            "invert store: resolution {r} is not a level of this UNet on this clip; its attention \
                             runs at {} tokens per side",
                            levels.join(", ")
                        )));
                    }
                }
                Ok(list.clone())
            }
        }
    }
}

/// One layer's maps at one step.
#[derive(Debug)]
pub struct StoredMap {
    pub site: Site,
    /// Spatial size of the queries.
    pub side: (i64, i64),
    /// `[F, heads, S, T]`, half precision, on the CPU.
    pub probs: Tensor,
}

/// The maps an inversion kept: `steps[j]` holds the layers of its `j`-th UNet call (timesteps ascending),
/// in call order — in memory, or with `disk` in a file per step.
#[derive(Debug)]
pub struct AttentionStore {
    pub options: StoreOptions,
    /// The latents' spatial size.
    pub latent: (i64, i64),
    /// The maps in memory (empty when they are on disk).
    pub steps: Vec<Vec<StoredMap>>,
    /// The maps on disk.
    pub disk: Option<DiskSteps>,
}

/// A store's steps on disk: `step-<j>.safetensors` in a folder of vidtune's cache, one tensor per layer;
/// the files (and the folder, once empty) are removed when the store is dropped.
#[derive(Debug)]
pub struct DiskSteps {
    pub dir: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
    /// Each layer's site and spatial size, in call order.
    layout: Vec<(Site, (i64, i64))>,
    bytes: i64,
    /// The folder recorded as a temporary: a killed process's is removed by a later run.
    _record: crate::fsutil::TempDirRecord,
}

impl DiskSteps {
    /// A new folder under `root` (`stores/` of the cache).
    fn new(root: &std::path::Path) -> Result<Self> {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = root.join(format!("{}-{nanos}-{n}", std::process::id()));
        let record = crate::fsutil::record_temp_dir(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(DiskSteps { dir, files: vec![], layout: vec![], bytes: 0, _record: record })
    }

    /// Writes step `j`'s maps.
    fn write(&mut self, j: usize, maps: Vec<StoredMap>) -> Result<()> {
        let layout: Vec<(Site, (i64, i64))> = maps.iter().map(|m| (m.site, m.side)).collect();
        if j == 0 || self.layout.is_empty() {
            self.layout = layout;
        } else if layout != self.layout {
            return Err(Error::Invalid(format!("invert store: step {j} ran other layers than step 0")));
        }
        let path = self.dir.join(format!("step-{j}.safetensors"));
        self.bytes += maps.iter().map(|m| m.probs.numel() as i64 * 2).sum::<i64>();
        let tensors: Vec<(String, Tensor)> =
            maps.into_iter().enumerate().map(|(k, m)| (k.to_string(), m.probs)).collect();
        crate::weights::safetensors_io::write(&path, &tensors, HashMap::new())?;
        self.files.truncate(j);
        self.files.push(path);
        Ok(())
    }

    /// Step `j`'s maps, read back.
    fn read(&self, j: usize) -> Result<Vec<StoredMap>> {
        let path = self.files.get(j).ok_or_else(|| Error::Invalid(format!("attention store: no step {j}")))?;
        let mut t = crate::weights::read_safetensors(path)?;
        self.layout
            .iter()
            .enumerate()
            .map(|(k, &(site, side))| {
                let probs = t.remove(&k.to_string()).ok_or_else(|| {
                    Error::Invalid(format!("attention store {}: layer {k} is missing", path.display()))
                })?;
                Ok(StoredMap { site, side, probs })
            })
            .collect()
    }
}

impl Drop for DiskSteps {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl AttentionStore {
    /// Bytes of the maps, in memory or on disk.
    pub fn bytes(&self) -> i64 {
        match &self.disk {
            Some(d) => d.bytes,
            None => self.steps.iter().flatten().map(|m| m.probs.numel() as i64 * 2).sum(),
        }
    }

    /// Steps kept.
    pub fn len(&self) -> usize {
        self.disk.as_ref().map_or(self.steps.len(), |d| d.files.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each layer's site and spatial size, in call order.
    pub fn layout(&self) -> Vec<(Site, (i64, i64))> {
        match &self.disk {
            Some(d) => d.layout.clone(),
            None => self.steps.first().map(|s| s.iter().map(|m| (m.site, m.side)).collect()).unwrap_or_default(),
        }
    }

    /// Layers per step.
    pub fn layers(&self) -> usize {
        self.layout().len()
    }

    /// Step `j`'s maps (read from disk when they are there).
    pub fn step(&self, j: usize) -> Result<Rc<Vec<StoredMap>>> {
        match &self.disk {
            Some(d) => Ok(Rc::new(d.read(j)?)),
            None => {
                let step = self.steps.get(j).ok_or_else(|| Error::Invalid(format!("attention store: no step {j}")))?;
                Ok(Rc::new(
                    step.iter()
                        .map(|m| StoredMap { site: m.site, side: m.side, probs: m.probs.shallow_clone() })
                        .collect(),
                ))
            }
        }
    }
}

/// Puts a store's maps in `tensors` (`store.<step>.<layer>`) and returns the metadata that reads them back
/// ([`store_from`]).
pub fn store_to(store: &AttentionStore, tensors: &mut Vec<(String, Tensor)>) -> String {
    let layers: Vec<serde_json::Value> =
        store.layout().iter().map(|(site, side)| serde_json::json!([*site == Site::Cross, side.0, side.1])).collect();
    for (j, step) in store.steps.iter().enumerate() {
        for (k, m) in step.iter().enumerate() {
            tensors.push((format!("store.{j}.{k}"), m.probs.shallow_clone()));
        }
    }
    serde_json::json!({
        "self": store.options.self_attn,
        "cross": store.options.cross,
        "resolutions": store.options.resolutions,
        "latent": [store.latent.0, store.latent.1],
        "steps": store.steps.len(),
        "layers": layers,
    })
    .to_string()
}

/// The store [`store_to`] wrote, taken out of `tensors`; `None` when anything is missing.
pub fn store_from(meta: &str, tensors: &mut HashMap<String, Tensor>) -> Option<AttentionStore> {
    let v: serde_json::Value = serde_json::from_str(meta).ok()?;
    let options = StoreOptions {
        self_attn: v["self"].as_bool()?,
        cross: v["cross"].as_bool()?,
        resolutions: v["resolutions"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()),
        disk: false,
    };
    let latent = (v["latent"][0].as_i64()?, v["latent"][1].as_i64()?);
    let layers: Vec<(Site, (i64, i64))> = v["layers"]
        .as_array()?
        .iter()
        .map(|l| {
            let site = if l[0].as_bool()? { Site::Cross } else { Site::SelfAttn };
            Some((site, (l[1].as_i64()?, l[2].as_i64()?)))
        })
        .collect::<Option<_>>()?;
    let steps = (0..v["steps"].as_u64()? as usize)
        .map(|j| {
            layers
                .iter()
                .enumerate()
                .map(|(k, &(site, side))| {
                    Some(StoredMap { site, side, probs: tensors.remove(&format!("store.{j}.{k}"))? })
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(AttentionStore { options, latent, steps, disk: None })
}

/// The spatial sides of a UNet's levels for latents of `h × w`, largest first.
pub fn level_sides(model: &VideoModel, h: i64, w: i64) -> Vec<(i64, i64)> {
    sides_of(model.base.unet.model.config.block_out_channels.len(), h, w)
}

fn sides_of(levels: usize, h: i64, w: i64) -> Vec<(i64, i64)> {
    let mut out = vec![];
    let (mut hh, mut ww) = (h, w);
    for _ in 0..levels {
        out.push((hh, ww));
        (hh, ww) = ((hh + 1) / 2, (ww + 1) / 2);
    }
    out
}

/// Keys per query of the self-attention module `spatial` at `side` in a clip of `frames` frames.
fn self_keys(spatial: &ModuleSpec, side: (i64, i64), frames: i64) -> i64 {
    let s = side.0 * side.1;
    match spatial.name.as_str() {
        "sparse_causal" => 2 * s,
        "full" => frames * s,
        "ffam" => {
            let r = spatial.get("ratio").max(1.0) as i64;
            s + (frames - 1) * ((side.0 + r - 1) / r) * ((side.1 + r - 1) / r)
        }
        // A chunk of `c` frames attends over its `M` merged tokens: `M²` values for `c · S` tokens.
        "vidtome" => {
            let c = (spatial.get("chunk").max(1.0) as i64).min(frames.max(1));
            let m = c * s - (((c - 1) * s) as f64 * spatial.get("ratio")).floor() as i64;
            m * m / (c * s)
        }
        _ => s,
    }
}

/// The bytes the attention store of `model` takes for `frames` frames at latents `h × w` over `steps`
/// steps ([`store_bytes_for`]).
pub fn store_bytes(model: &VideoModel, frames: i64, h: i64, w: i64, steps: i64, opts: &StoreOptions) -> Result<f64> {
    let text = model.base.tokenizer.max_length as i64;
    store_bytes_for(&model.base.unet.model.config, &model.spec.spatial, text, frames, (h, w), steps, opts)
}

/// The bytes of an attention store: per step and per kept layer `F · heads · S · T` half-precision values
/// (`T`: the keys `spatial` gathers per query, or the `text` tokens).
pub fn store_bytes_for(
    cfg: &UNet2DConditionConfig,
    spatial: &ModuleSpec,
    text: i64,
    frames: i64,
    (h, w): (i64, i64),
    steps: i64,
    opts: &StoreOptions,
) -> Result<f64> {
    let levels = sides_of(cfg.block_out_channels.len(), h, w);
    let kept = opts.sides(&levels.iter().map(|s| s.0).collect::<Vec<_>>())?;
    let n = levels.len();
    let mut per_step = 0f64;
    let mut add = |level: usize, layers: i64| {
        let side = levels[level];
        if !kept.contains(&side.0) || layers == 0 {
            return;
        }
        let (s, heads) = (side.0 * side.1, cfg.heads(level));
        let mut keys = 0;
        if opts.self_attn {
            keys += self_keys(spatial, side, frames);
        }
        if opts.cross {
            keys += text;
        }
        per_step += (layers * frames * heads * s * keys) as f64 * 2.0;
    };
    let cross = |name: &str| name.starts_with("CrossAttn");
    for (i, t) in cfg.down_block_types.iter().enumerate() {
        add(i, if cross(t) { cfg.layers(i) } else { 0 });
    }
    if cfg.mid_block_type.as_deref().is_none_or(|m| m.contains("CrossAttn")) {
        add(n - 1, 1);
    }
    for (u, t) in cfg.up_block_types.iter().enumerate() {
        let level = n - 1 - u;
        add(level, if cross(t) { cfg.layers(level) + 1 } else { 0 });
    }
    Ok(per_step * steps as f64)
}

/// Records an inversion's maps ([`MapsLoop`] of its conditioning).
#[derive(Debug)]
pub struct Recorder {
    sides: Vec<i64>,
    options: StoreOptions,
    steps: RefCell<Vec<Vec<StoredMap>>>,
    rows: Cell<(i64, i64)>,
    /// With `disk`: where finished steps go (their entries in `steps` are left empty).
    disk: RefCell<Option<DiskSteps>>,
}

/// Where stores on disk go: `stores/` in vidtune's cache.
pub fn stores_dir() -> std::path::PathBuf {
    crate::env::cache_dir().join("stores")
}

impl Recorder {
    pub fn new(options: StoreOptions, sides: Vec<i64>) -> Result<Self> {
        let disk = match options.disk {
            true => Some(DiskSteps::new(&stores_dir())?),
            false => None,
        };
        Ok(Recorder { sides, options, steps: RefCell::new(vec![]), rows: Cell::new((0, 0)), disk: RefCell::new(disk) })
    }

    /// Writes the recorded steps before `upto` that are still in memory to disk (with `disk`).
    fn flush(&self, upto: usize) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        let Some(d) = disk.as_mut() else { return Ok(()) };
        let mut steps = self.steps.borrow_mut();
        for j in d.files.len()..upto.min(steps.len()) {
            d.write(j, std::mem::take(&mut steps[j]))?;
        }
        Ok(())
    }

    /// The store recorded.
    pub fn finish(&self, latent: (i64, i64)) -> Result<AttentionStore> {
        self.flush(usize::MAX)?;
        let disk = self.disk.take();
        let steps = if disk.is_some() { vec![] } else { self.steps.take() };
        Ok(AttentionStore { options: self.options.clone(), latent, steps, disk })
    }
}

impl MapsLoop for Recorder {
    fn call(self: Rc<Self>, step: crate::control::CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
        // The steps before this one are done: on disk they leave memory.
        self.flush(step.step)?;
        if let Some(d) = self.disk.borrow_mut().as_mut() {
            if d.files.len() > step.step {
                for f in d.files.drain(step.step..) {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        let mut steps = self.steps.borrow_mut();
        // One entry per step: a step's first call opens it (a call again at the same step starts it over).
        steps.truncate(step.step);
        while steps.len() <= step.step {
            steps.push(vec![]);
        }
        self.rows.set(cond_rows(step.guided, batch, frames));
        drop(steps);
        Ok(self)
    }
}

impl MapControl for Recorder {
    fn wants(&self, site: Site, spatial: (i64, i64)) -> bool {
        let kept = match site {
            Site::SelfAttn => self.options.self_attn,
            Site::Cross => self.options.cross,
            Site::Other => false,
        };
        kept && self.sides.contains(&spatial.0)
    }

    fn edit(&self, site: Site, spatial: (i64, i64), probs: Tensor) -> Result<Tensor> {
        let (start, len) = self.rows.get();
        let kept = probs.narrow(0, start, len).to_kind(Kind::Half).to_device(Device::Cpu);
        if let Some(step) = self.steps.borrow_mut().last_mut() {
            step.push(StoredMap { site, side: spatial, probs: kept });
        }
        Ok(probs)
    }
}

/// The sides a store kept.
pub(super) fn level_sides_of(store: &AttentionStore) -> Vec<i64> {
    let mut sides: Vec<i64> = store.layout().iter().map(|(_, side)| side.0).collect();
    sides.sort_unstable();
    sides.dedup();
    sides
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::processors::Role;

    fn sd14() -> UNet2DConditionConfig {
        serde_json::from_str(include_str!("../../configs/sd-v1-4/unet/config.json")).unwrap()
    }

    #[test]
    fn the_store_of_24_frames_at_512_on_sd14_is_estimated_layer_by_layer() {
        let sparse = ModuleSpec::named(Role::Spatial, "sparse_causal").unwrap();
        let opts = StoreOptions::default();
        let bytes = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &opts).unwrap();
        // Every level but 64²: at 32² five attn1 (down 2, up 3) over 2 · 1024 keys and five attn2 over 77
        // tokens; at 16² the same with 256 queries; at 8² the mid block's one of each. 8 heads, 24 frames.
        let level = |s: i64, layers: i64| (layers * 24 * 8 * s * (2 * s + 77)) as f64 * 2.0;
        let per_step = level(1024, 5) + level(256, 5) + level(64, 1);
        assert_eq!(bytes, per_step * 50.0);
        assert!((bytes / 1e9 - 223.6).abs() < 0.1, "{:.1} GB", bytes / 1e9);
        // The 64² level alone would be larger than all the rest: FateZero leaves it out.
        let all = StoreOptions { resolutions: Some(vec![64, 32, 16, 8]), ..opts.clone() };
        let with_64 = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &all).unwrap();
        assert!(with_64 - bytes > bytes * 5.0);
        let cross_only = StoreOptions { self_attn: false, ..opts };
        let c = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &cross_only).unwrap();
        assert_eq!(c, ((5 * 1024 + 5 * 256 + 64) * 24 * 8 * 77 * 2 * 50i64) as f64);
    }

    #[test]
    fn a_store_round_trips_through_its_tensors_and_metadata() {
        let map = |site, side: i64, seed: f64| StoredMap {
            site,
            side: (side, side),
            probs: Tensor::full([2, 1, side * side, 3], seed, (Kind::Half, Device::Cpu)),
        };
        let store = AttentionStore {
            options: StoreOptions { resolutions: Some(vec![4, 2]), ..Default::default() },
            latent: (8, 8),
            steps: vec![
                vec![map(Site::SelfAttn, 4, 0.1), map(Site::Cross, 2, 0.2)],
                vec![map(Site::SelfAttn, 4, 0.3), map(Site::Cross, 2, 0.4)],
            ],
            disk: None,
        };
        let mut tensors = vec![];
        let meta = store_to(&store, &mut tensors);
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let back = store_from(&meta, &mut by_name).unwrap();
        assert_eq!(
            (back.options.clone(), back.latent, back.steps.len(), back.layers()),
            (store.options.clone(), (8, 8), 2, 2)
        );
        for (a, b) in store.steps.iter().flatten().zip(back.steps.iter().flatten()) {
            assert_eq!((a.site, a.side), (b.site, b.side));
            assert!(a.probs.equal(&b.probs));
        }
        assert_eq!(back.bytes(), store.bytes());
        // A missing tensor: no store (the memo recomputes it).
        let mut none = HashMap::new();
        assert!(store_from(&meta, &mut none).is_none());
    }
}
