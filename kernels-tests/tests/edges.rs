//! Grey conversion and Canny edges against OpenCV (`cv2.cvtColor`, `cv2.Canny`), pixel for pixel.

use tch::{Kind, Tensor};
use vidtune_kernels::edges::{canny, canny_frames, rgb_to_gray};
use vidtune_kernels::image::from_rgb8;
use vidtune_kernels_tests::load_fixture;

fn bytes(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn grey_and_canny_equal_opencv_pixel_for_pixel() {
    let f = load_fixture("canny.safetensors");
    for i in 0..3 {
        let rgb = &f[&format!("rgb_{i}")];
        let (h, w) = (rgb.size()[0] as usize, rgb.size()[1] as usize);
        let gray = rgb_to_gray(&bytes(rgb));
        assert_eq!(gray, bytes(&f[&format!("gray_{i}")]), "image {i}: grey");
        for (low, high) in [("50", "120"), ("100", "200"), ("200", "100"), ("0", "30"), ("20.7", "80.2")] {
            let edges = canny(&gray, w, h, low.parse().unwrap(), high.parse().unwrap()).unwrap();
            let want = bytes(&f[&format!("edges_{i}_{low}_{high}")]);
            let wrong = edges.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                wrong,
                0,
                "image {i}, thresholds {low}/{high}: {wrong} of {} pixels differ from OpenCV",
                want.len()
            );
        }
    }
}

#[test]
fn canny_of_frames_is_white_on_black_in_three_channels() {
    let f = load_fixture("canny.safetensors");
    let rgb = &f["rgb_0"];
    let (h, w) = (rgb.size()[0], rgb.size()[1]);
    let image = from_rgb8(&bytes(rgb), h, w).unwrap();
    let frames = Tensor::stack(&[&image, &image.flip([2])], 0);
    let edges = canny_frames(&frames, 100.0, 200.0).unwrap();
    assert_eq!(edges.size(), [2, 3, h, w]);
    let want = f["edges_0_100_200"].to_kind(Kind::Float) / 127.5 - 1.0;
    assert!(edges.get(0).get(1).equal(&want));
    assert!(edges.get(1).get(0).equal(&want.flip([1])), "each frame its own edges");
    assert_eq!(canny_frames(&image, 100.0, 200.0).unwrap().size(), [3, h, w]);
    let e = canny_frames(&Tensor::zeros([2, 1, 8, 8], (Kind::Float, tch::Device::Cpu)), 1.0, 2.0).unwrap_err();
    assert!(e.to_string().contains("[3, H, W] or [N, 3, H, W]"), "{e}");
    assert!(canny(&[0; 4], 2, 2, -1.0, 5.0).is_err());
}
