//! How large a tuned file is for the real SD1.4 architecture: the parameters Tune-A-Video trains plus the
//! temporal layers inflation adds, counted on a model built without allocating its weights.
//!
//! `cargo run -p vidtune-runtime --example tuned_size`

use tch::nn::VarStore;
use vidtune_runtime::config::UNet2DConditionConfig;
use vidtune_runtime::models::nn::{Builder, InitMode};
use vidtune_runtime::models::UNet2DConditionModel;
use vidtune_runtime::pipelines::tune::{matches, TAV_TRAIN};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: UNet2DConditionConfig = serde_json::from_str(include_str!("../configs/sd-v1-4/unet/config.json"))?;
    for kind in ["temporal", "stam"] {
        let vs = VarStore::new(tch::Device::Cpu);
        let stages = vidtune_runtime::video::stages_named(Some(kind))?;
        let _unet = UNet2DConditionModel::new(&Builder::new(vs.root(), InitMode::Empty), &config, stages)?;
        let vars = vs.variables();
        let count = |f: &dyn Fn(&str) -> bool| vars.iter().filter(|(n, _)| f(n)).map(|(_, t)| t.numel()).sum::<usize>();
        let total = count(&|_| true);
        let new = count(&|n| n.contains("_temp."));
        let saved = count(&|n| n.contains("_temp.") || TAV_TRAIN.iter().any(|p| matches(p, n)));
        println!(
            "{}: UNet {:.1} M parameters ({:.1} M new temporal); tuned file {:.1} M parameters = {:.0} MB fp32, {:.0} MB fp16 \
             (the whole pipeline Tune-A-Video saves: ~{:.1} GB fp32)",
            kind,
            total as f64 / 1e6,
            new as f64 / 1e6,
            saved as f64 / 1e6,
            saved as f64 * 4.0 / 1e6,
            saved as f64 * 2.0 / 1e6,
            (total + 83_653_863 + 123_060_480) as f64 * 4.0 / 1e9,
        );
    }
    Ok(())
}
