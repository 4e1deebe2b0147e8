//! Image kernels against naive references.

use tch::{Kind, Tensor};
use vidtune_kernels::image::{fit, from_rgb8, grid, psnr, resize, to_rgb8, Fit};
use vidtune_kernels_tests::assert_close;

#[test]
fn every_byte_value_round_trips_exactly() {
    let bytes: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
    let t = from_rgb8(&bytes, 16, 16).unwrap();
    assert_eq!(t.size(), vec![3, 16, 16]);
    assert!(t.min().double_value(&[]) >= -1.0 && t.max().double_value(&[]) <= 1.0);
    assert_eq!(to_rgb8(&t).unwrap(), bytes);
}

#[test]
fn grid_places_each_frame_at_its_cell() {
    let frames =
        Tensor::arange(5, (Kind::Float, tch::Device::Cpu)).view([5, 1, 1, 1]).expand([5, 3, 4, 6], true) / 10.0;
    let sheet = grid(&frames, 2, 1, -1.0).unwrap();
    assert_eq!(sheet.size(), vec![3, 3 * 4 + 4, 2 * 6 + 3]);
    for i in 0..5i64 {
        let (r, c) = (i / 2, i % 2);
        let cell = sheet.narrow(1, 1 + r * 5, 4).narrow(2, 1 + c * 7, 6);
        assert_close(&cell, &frames.get(i), 0.0, "cell");
    }
    // The unused sixth cell and the borders keep the fill value.
    assert_eq!(sheet.narrow(1, 11, 4).narrow(2, 8, 6).max().double_value(&[]), -1.0);
}

#[test]
fn resize_keeps_constants_and_averages_when_shrinking() {
    let flat = Tensor::full([2, 3, 32, 48], 0.25, (Kind::Float, tch::Device::Cpu));
    assert_close(
        &resize(&flat, 8, 12).unwrap(),
        &Tensor::full([2, 3, 8, 12], 0.25, (Kind::Float, tch::Device::Cpu)),
        1e-6,
        "constant",
    );
    // A 2x2 checkerboard of period 1 shrunk by 4 averages to its mean (antialiasing), not an aliased sample.
    let checker = (Tensor::arange(16, (Kind::Float, tch::Device::Cpu)).view([1, 16])
        + Tensor::arange(16, (Kind::Float, tch::Device::Cpu)).view([16, 1]))
    .remainder(2.0)
    .view([1, 1, 16, 16]);
    let small = resize(&checker, 4, 4).unwrap();
    // (The triangle filter weighs odd and even taps almost equally: within 0.01, where aliasing errs by 0.5.)
    assert_close(
        &small,
        &Tensor::full([1, 1, 4, 4], 0.5, (Kind::Float, tch::Device::Cpu)),
        0.01,
        "antialiased checkerboard",
    );
}

#[test]
fn crop_and_pad_geometry() {
    // A wide frame whose columns hold their index: crop keeps the centre columns, pad adds bars.
    let cols = Tensor::arange(40, (Kind::Float, tch::Device::Cpu)).view([1, 1, 1, 40]).expand([1, 1, 20, 40], true);
    let cropped = fit(&cols, 20, 20, Fit::Crop, -1.0).unwrap();
    assert_close(&cropped, &cols.narrow(3, 10, 20), 1e-5, "centre crop at scale 1");
    let padded = fit(&cols, 40, 40, Fit::Pad, -1.0).unwrap();
    assert_eq!(padded.size(), vec![1, 1, 40, 40]);
    assert_eq!(padded.narrow(2, 0, 10).max().double_value(&[]), -1.0, "top bar");
    assert_eq!(padded.narrow(2, 30, 10).max().double_value(&[]), -1.0, "bottom bar");
    assert!(padded.narrow(2, 10, 20).min().double_value(&[]) >= 0.0, "content band");
}

#[test]
fn psnr_matches_its_definition() {
    let a = Tensor::zeros([3, 4, 4], (Kind::Float, tch::Device::Cpu));
    let b = a.ones_like() * 0.1;
    // mse = 0.01 over a peak-to-peak range of 2: 10 log10(4 / 0.01) = 26.02 dB.
    assert!((psnr(&a, &b).unwrap() - 26.0206).abs() < 1e-3);
    assert!(psnr(&a, &a).unwrap().is_infinite());
}

#[test]
fn robust_outliers_name_the_frames_that_stand_out() {
    use vidtune_kernels::metrics::robust_outliers;
    let changes = [0.31, 0.30, 0.33, 0.02, 0.29, 0.32, 0.30, 0.31];
    assert_eq!(robust_outliers(&changes, 3.0, 0.05, false), vec![3]);
    // A steady series flags nothing, however tight; a value far above is flagged unless only lows count.
    assert!(robust_outliers(&[0.3; 8], 3.0, 0.05, false).is_empty());
    let high = [0.3, 0.3, 0.31, 0.9, 0.3];
    assert_eq!(robust_outliers(&high, 3.0, 0.05, false), vec![3]);
    assert!(robust_outliers(&high, 3.0, 0.05, true).is_empty());
    assert!(robust_outliers(&[0.1, 0.9], 3.0, 0.05, false).is_empty(), "too few frames to tell");
}
