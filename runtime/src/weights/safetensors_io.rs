//! safetensors files with metadata (tch writes tensors only): vidtune's tuned files and cache entries
//! record what produced them in the file's `__metadata__`.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => return Err(Error::Invalid(format!("cannot save tensors of kind {other:?}"))),
    })
}

fn owned(t: &Tensor) -> Result<Owned> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let dtype = dtype_of(t.kind())?;
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    Ok(Owned { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
}

/// Writes `tensors` with `metadata` to `path`, atomically: vidtune's own files (the memo, model caches).
pub fn write(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    write_with(path, tensors, metadata, false)
}

/// Writes a file a user asked for (a tuned model, a checkpoint): as [`write`], but never over a file
/// vidtune did not write ([`crate::fsutil::write_output`]).
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    write_with(path, tensors, metadata, true)
}

fn write_with(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
    output: bool,
) -> Result<()> {
    let views: Vec<(String, Owned)> = tensors.iter().map(|(n, t)| Ok((n.clone(), owned(t)?))).collect::<Result<_>>()?;
    let serialize = |tmp: &Path| {
        safetensors::serialize_to_file(views.iter().map(|(n, o)| (n.as_str(), o)), Some(metadata), tmp)
            .map_err(|e| Error::bad_file(path, format!("cannot write safetensors: {e}")))?;
        // The serializer creates the file owner-only; give it the usual permissions.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644));
        }
        Ok(())
    };
    if output {
        crate::fsutil::write_output(path, serialize)
    } else {
        write_atomic(path, serialize)
    }
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| Error::bad_file(path, "not a safetensors file (too short)"))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(Error::bad_file(path, "not a safetensors file (header too large)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|_| Error::bad_file(path, "not a safetensors file (truncated header)"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| Error::bad_file(path, format!("not a safetensors file ({e})")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default())
}
