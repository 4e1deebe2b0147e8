//! A still image: `[3, H, W]` float in [−1, 1] on the CPU, loaded and saved through the `image` crate.

use crate::error::{Error, Result};
use crate::fsutil::write_output;
use std::path::Path;
use tch::Tensor;
use vidtune_kernels::image as kimage;

/// One RGB image, `[3, H, W]`, values in [−1, 1].
#[derive(Debug)]
pub struct Image {
    data: Tensor,
}

impl Clone for Image {
    fn clone(&self) -> Self {
        Image { data: self.data.shallow_clone() }
    }
}

impl Image {
    /// Wraps a `[3, H, W]` tensor (moved to the CPU as f32).
    pub fn new(data: Tensor) -> Result<Self> {
        let size = data.size();
        if size.len() != 3 || size[0] != 3 || size[1] == 0 || size[2] == 0 {
            return Err(Error::Invalid(format!("an image is [3, H, W], got {size:?}")));
        }
        Ok(Image { data: data.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float) })
    }

    /// Builds an image from interleaved 8-bit RGB.
    pub fn from_rgb8(pixels: &[u8], width: u32, height: u32) -> Result<Self> {
        Image::new(kimage::from_rgb8(pixels, height as i64, width as i64)?)
    }

    /// The pixels as a `[3, H, W]` tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.data
    }

    pub fn width(&self) -> i64 {
        self.data.size()[2]
    }

    pub fn height(&self) -> i64 {
        self.data.size()[1]
    }

    /// The image as an `image` crate buffer (8-bit RGB).
    pub fn to_rgb8(&self) -> Result<image::RgbImage> {
        let bytes = kimage::to_rgb8(&self.data)?;
        image::RgbImage::from_raw(self.width() as u32, self.height() as u32, bytes)
            .ok_or_else(|| Error::Invalid("image buffer size mismatch".into()))
    }

    /// Encodes the image as PNG bytes.
    pub fn to_png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.to_rgb8()?
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::Invalid(format!("PNG encoding failed: {e}")))?;
        Ok(out.into_inner())
    }

    /// Loads a PNG, JPEG or GIF (first frame) as RGB.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let img = read_rgb8(path)?;
        Image::from_rgb8(img.as_raw(), img.width(), img.height())
    }

    /// Saves the image; the format follows the extension (`.png`, `.jpg`/`.jpeg`). Written atomically, and
    /// never over a file vidtune did not write (see [`crate::fsutil::with_overwrite`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let format = image_format_for(path)?;
        let rgb = self.to_rgb8()?;
        write_output(path, |tmp| {
            rgb.save_with_format(tmp, format).map_err(|e| Error::bad_file(path, format!("cannot write image: {e}")))
        })
    }

    /// Saves as PNG with text chunks (`key: value`, as ComfyUI stores a result's recipe): the provenance
    /// of a result travels with the file. Other formats save without them. Written atomically.
    pub fn save_with_text(&self, path: impl AsRef<Path>, text: &[(String, String)]) -> Result<()> {
        let path = path.as_ref();
        if text.is_empty() || image_format_for(path)? != image::ImageFormat::Png {
            return self.save(path);
        }
        let rgb = self.to_rgb8()?;
        write_output(path, |tmp| write_png(tmp, &rgb, text))
    }

    /// Resizes to `height × width` (antialiased bilinear).
    pub fn resize(&self, height: i64, width: i64) -> Result<Image> {
        Image::new(kimage::resize(&self.data.unsqueeze(0), height, width)?.squeeze_dim(0))
    }
}

/// The still-image format written for `path`'s extension.
pub fn image_format_for(path: &Path) -> Result<image::ImageFormat> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => Ok(image::ImageFormat::Png),
        "jpg" | "jpeg" => Ok(image::ImageFormat::Jpeg),
        _ => Err(Error::Invalid(format!(
            "{}: unknown image extension {ext:?}; expected .png, .jpg or .jpeg",
            path.display()
        ))),
    }
}

/// Reads any image the `image` crate knows as 8-bit RGB, with errors naming the file.
pub(crate) fn read_rgb8(path: &Path) -> Result<image::RgbImage> {
    if !path.exists() {
        return Err(Error::NotFound(path.to_path_buf()));
    }
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader.decode().map_err(|e| Error::bad_file(path, format!("not a readable image ({e})")))?;
    Ok(img.to_rgb8())
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}x{})", self.width(), self.height())
    }
}

/// Writes an RGB PNG with `text` as compressed text chunks (zTXt, or iTXt when not Latin-1).
pub(crate) fn write_png(path: &Path, rgb: &image::RgbImage, text: &[(String, String)]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::bad_file(path, format!("cannot write image: {e}"));
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), rgb.width(), rgb.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        let r = if v.chars().all(|c| (c as u32) < 256) {
            enc.add_ztxt_chunk(k.clone(), v.clone())
        } else {
            enc.add_itxt_chunk(k.clone(), v.clone())
        };
        r.map_err(|e| fail(&e))?;
    }
    let mut w = enc.write_header().map_err(|e| fail(&e))?;
    w.write_image_data(rgb.as_raw()).map_err(|e| fail(&e))?;
    w.finish().map_err(|e| fail(&e))
}

/// The text chunks of a PNG file (`tEXt`, `zTXt`, `iTXt`), by keyword.
pub fn png_text(path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| Error::bad_file(path, format!("not a PNG: {e}")))?;
    // Text after the image data is only seen once the image is read.
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let _ = reader.next_frame(&mut buf);
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.compressed_latin1_text {
        if let Ok(text) = t.get_text() {
            out.push((t.keyword.clone(), text));
        }
    }
    for t in &info.utf8_text {
        if let Ok(text) = t.get_text() {
            out.push((t.keyword.clone(), text));
        }
    }
    Ok(out)
}
