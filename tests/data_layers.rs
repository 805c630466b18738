//! Data, ImageData and HDF5Data layers: order and wrap-around against Caffe's recordings,
//! decoding against OpenCV's, random crops and mirrors, shuffling, and clear errors for bad
//! input. Paths are absolute (no test here depends on the current directory).

use std::path::{Path, PathBuf};

use anyhow::Result;
use crema::data::image::{read_image, ColorMode, Image};
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{Datum, NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::npy::read_npy_f32;
use prost::Message;

fn caffe_fixtures() -> PathBuf {
    match std::env::var("CREMA_CAFFE_FIXTURES") {
        Ok(p) => PathBuf::from(p),
        Err(_) => match std::env::var_os("CREMA_SHARED") {
            Some(shared) => PathBuf::from(shared).join("fixtures/caffe"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/caffe"),
        },
    }
    .canonicalize()
    .expect("Caffe fixture folder (set CREMA_SHARED to the shared folder)")
}

fn build(text: &str, phase: Phase) -> Result<Net> {
    crema::util::glog::set_min_level(2);
    let p = parse_net_text(text, "test.prototxt", TextOptions::default())?;
    let state = NetState {
        phase: Some(phase as i32),
        ..Default::default()
    };
    Net::new(
        &p,
        &state,
        &mut CaffeRng::new(7),
        BuildOptions { verbose: false },
    )
}

fn forward(net: &mut Net) -> Result<(Vec<f32>, Vec<f32>)> {
    net.forward(&mut CaffeRng::new(1))?;
    let data = net.blob_by_name("data").unwrap().data_vec();
    let label = net
        .blob_by_name("label")
        .map(|b| b.data_vec())
        .unwrap_or_default();
    Ok((data, label))
}

fn err_text(r: Result<Net>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn lmdb_net(source: &Path, batch: usize, extra: &str) -> String {
    format!(
        r#"layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{}" backend: LMDB batch_size: {batch} {extra} }} }}"#,
        source.display()
    )
}

#[test]
fn data_layer_reads_lmdb_in_order_and_wraps_mid_batch() {
    let dir = caffe_fixtures().join("e2e_lmdb/data");
    let (shape, all) = read_npy_f32(&dir.join("train_data.npy")).unwrap();
    let (_, labels) = read_npy_f32(&dir.join("train_label.npy")).unwrap();
    let n = shape[0];
    let per: usize = shape[1..].iter().product();
    let batch = 30;
    for prefetch in [1, 4] {
        let mut net = build(
            &lmdb_net(
                &dir.join("train_lmdb"),
                batch,
                &format!("prefetch: {prefetch}"),
            ),
            Phase::Train,
        )
        .unwrap();
        assert_eq!(
            net.blob_by_name("data").unwrap().shape(),
            vec![batch, 3, 8, 8]
        );
        // 30 batches of 30 over 400 records: wraps twice, mid-batch.
        for k in 0..30 {
            let (data, label) = forward(&mut net).unwrap();
            for b in 0..batch {
                let r = (k * batch + b) % n;
                assert_eq!(label[b], labels[r], "batch {k} item {b}");
                assert_eq!(
                    &data[b * per..(b + 1) * per],
                    &all[r * per..(r + 1) * per],
                    "batch {k} item {b}"
                );
            }
        }
        let li = net.layer_index("data").unwrap();
        assert!(
            net.layers[li].layer.data_wait().is_some(),
            "the Data layer reports its wait time"
        );
    }
}

#[test]
fn data_layer_order_matches_caffe_probe() {
    let dir = caffe_fixtures().join("e2e_lmdb/probe_order");
    let order: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("order.json")).unwrap()).unwrap();
    let labels = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let mut train = build(&lmdb_net(&dir.join("idx_lmdb"), 30, ""), Phase::Train).unwrap();
    for b in order["train_batches"].as_array().unwrap() {
        assert_eq!(
            forward(&mut train).unwrap().1,
            labels(&b["labels"]),
            "train iter {}",
            b["iter"]
        );
    }
    let mut test = build(&lmdb_net(&dir.join("idx_lmdb"), 30, ""), Phase::Test).unwrap();
    for (k, b) in order["standalone_test_net_5_forwards"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(forward(&mut test).unwrap().1, labels(b), "test forward {k}");
    }
}

fn datum(c: i32, h: i32, w: i32, label: i32) -> Vec<u8> {
    let d = Datum {
        channels: Some(c),
        height: Some(h),
        width: Some(w),
        data: Some((0..c * h * w).map(|i| (i % 251) as u8).collect()),
        label: Some(label),
        ..Default::default()
    };
    d.encode_to_vec()
}

fn write_lmdb(dir: &Path, records: &[(&str, Vec<u8>)]) {
    use lmdb::{Environment, Transaction, WriteFlags};
    std::fs::create_dir_all(dir).unwrap();
    let env = Environment::new().set_map_size(1 << 24).open(dir).unwrap();
    let db = env.open_db(None).unwrap();
    let mut txn = env.begin_rw_txn().unwrap();
    for (k, v) in records {
        txn.put(db, k, v, WriteFlags::empty()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn data_layer_errors_name_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_lmdb");
    let e = err_text(build(&lmdb_net(&missing, 2, ""), Phase::Test));
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("does not exist"),
        "{e}"
    );

    // Records of different sizes: the error names the database and the record.
    let db = tmp.path().join("mixed");
    write_lmdb(
        &db,
        &[
            ("00000000", datum(3, 4, 4, 0)),
            ("00000001", datum(3, 5, 5, 1)),
        ],
    );
    let mut net = build(&lmdb_net(&db, 2, ""), Phase::Test).unwrap();
    let e = format!("{:#}", net.forward(&mut CaffeRng::new(1)).unwrap_err());
    assert!(
        e.contains(&db.display().to_string()) && e.contains("00000001") && e.contains("3x5x5"),
        "{e}"
    );

    // A Datum whose byte count disagrees with its shape.
    let bad = tmp.path().join("bad_count");
    let mut d = Datum::decode(&datum(3, 4, 4, 0)[..]).unwrap();
    d.data.as_mut().unwrap().pop();
    write_lmdb(&bad, &[("a", d.encode_to_vec())]);
    let e = err_text(build(&lmdb_net(&bad, 1, ""), Phase::Test));
    assert!(
        e.contains("47 bytes") && e.contains(&bad.display().to_string()),
        "{e}"
    );

    // A mean file of another size than the data.
    let ci = caffe_fixtures().join("convert_imageset");
    let text = format!(
        r#"layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ mean_file: "{}" }}
  data_param {{ source: "{}" backend: LMDB batch_size: 2 }} }}"#,
        ci.join("mean.binaryproto").display(),
        ci.join("resized_raw_lmdb").display()
    );
    let mut net = build(&text, Phase::Test).unwrap();
    let e = format!("{:#}", net.forward(&mut CaffeRng::new(1)).unwrap_err());
    assert!(
        e.contains("mean.binaryproto") && e.contains("3x10x12") && e.contains("3x16x16"),
        "{e}"
    );

    // LevelDB (the proto's default backend).
    let text = format!(
        r#"layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{}" batch_size: 2 }} }}"#,
        missing.display()
    );
    let e = err_text(build(&text, Phase::Test));
    assert!(
        e.contains("LevelDB") && e.contains("not supported") && e.contains("backend: LMDB"),
        "{e}"
    );
    let text = format!(
        r#"layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{}" batch_size: 2 }} }}"#,
        db.display()
    );
    let e = err_text(build(&text, Phase::Test));
    assert!(
        e.contains("is an LMDB database") && e.contains("backend: LMDB"),
        "{e}"
    );

    let e = err_text(build(
        r#"layer { name: "m" type: "MemoryData" top: "data" top: "label" }"#,
        Phase::Test,
    ));
    assert!(e.contains("MemoryData") && e.contains("Input"), "{e}");
}

fn imagedata_dir() -> PathBuf {
    caffe_fixtures().join("imagedata")
}

#[test]
fn decoding_matches_opencv_for_every_fixture_image() {
    let dir = imagedata_dir();
    let (_, color) = read_npy_f32(&dir.join("decoded_bgr_hwc_uint8.npy")).unwrap();
    let (_, as_gray) = read_npy_f32(&dir.join("decoded_color_list_as_gray_hw_uint8.npy")).unwrap();
    let (_, gray) = read_npy_f32(&dir.join("decoded_gray_hw_uint8.npy")).unwrap();
    let list = std::fs::read_to_string(dir.join("list.txt")).unwrap();
    let max_diff = |img: &Image, want: &[f32]| -> f32 {
        assert_eq!(img.data.len(), want.len());
        img.data
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as f32 - b).abs())
            .fold(0.0, f32::max)
    };
    for (i, line) in list.lines().enumerate() {
        let path = dir.join(line.rsplit_once(' ').unwrap().0);
        let c = read_image(&path, ColorMode::Color).unwrap();
        let g = read_image(&path, ColorMode::Gray).unwrap();
        let (dc, dg) = (
            max_diff(&c, &color[i * 360..(i + 1) * 360]),
            max_diff(&g, &as_gray[i * 120..(i + 1) * 120]),
        );
        println!(
            "{}: max difference to OpenCV: colour {dc}, gray {dg}",
            path.display()
        );
        assert_eq!((dc, dg), (0.0, 0.0), "{}", path.display());
    }
    for i in 0..2 {
        let path = dir.join(format!("imgs/gray{i}.png"));
        let g = read_image(&path, ColorMode::Gray).unwrap();
        assert_eq!(max_diff(&g, &gray[i * 120..(i + 1) * 120]), 0.0);
        let c = read_image(&path, ColorMode::Color).unwrap();
        assert!(c.data.chunks(3).zip(&g.data).all(|(p, &v)| p == [v, v, v]));
    }
}

/// A list of the fixture images with absolute paths and label = line index.
fn indexed_list(tmp: &Path) -> (PathBuf, Vec<Image>) {
    let dir = imagedata_dir();
    let list = std::fs::read_to_string(dir.join("list.txt")).unwrap();
    let mut text = String::new();
    let mut images = Vec::new();
    for (i, line) in list.lines().enumerate() {
        let path = dir.join(line.rsplit_once(' ').unwrap().0);
        images.push(read_image(&path, ColorMode::Color).unwrap());
        text.push_str(&format!("{} {i}\n", path.display()));
    }
    let p = tmp.join("indexed.txt");
    std::fs::write(&p, text).unwrap();
    (p, images)
}

fn image_net(list: &Path, batch: usize, image_param: &str, transform: &str) -> String {
    format!(
        r#"layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  transform_param {{ {transform} }}
  image_data_param {{ source: "{}" batch_size: {batch} {image_param} }} }}"#,
        list.display()
    )
}

#[test]
fn train_crops_and_mirrors_are_random_windows_of_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (list, images) = indexed_list(tmp.path());
    let mut net = build(
        &image_net(&list, 6, "", "crop_size: 7 mirror: true scale: 2"),
        Phase::Train,
    )
    .unwrap();
    let (crop, c) = (7, 3);
    let mut offsets = std::collections::HashSet::new();
    let mut mirrored = [0usize; 2];
    for _ in 0..8 {
        let (data, label) = forward(&mut net).unwrap();
        for (b, &l) in label.iter().enumerate() {
            let img = &images[l as usize];
            let item = &data[b * c * crop * crop..(b + 1) * c * crop * crop];
            let mut found = None;
            'search: for ho in 0..=img.height - crop {
                for wo in 0..=img.width - crop {
                    for m in [false, true] {
                        let ok = (0..c).all(|k| {
                            (0..crop).all(|y| {
                                (0..crop).all(|x| {
                                    let sx = if m { crop - 1 - x } else { x };
                                    let v = img.data[((ho + y) * img.width + wo + sx) * c + k]
                                        as f32
                                        * 2.0;
                                    item[(k * crop + y) * crop + x] == v
                                })
                            })
                        });
                        if ok {
                            found = Some((ho, wo, m));
                            break 'search;
                        }
                    }
                }
            }
            let (ho, wo, m) = found.expect("each item is a (possibly mirrored) crop of its image");
            offsets.insert((ho, wo));
            mirrored[m as usize] += 1;
        }
    }
    assert!(offsets.len() > 5, "crop offsets vary in TRAIN: {offsets:?}");
    assert!(
        mirrored[0] > 0 && mirrored[1] > 0,
        "mirroring is random: {mirrored:?}"
    );
    // TEST: centred crop, mirror still random.
    let mut net = build(&image_net(&list, 24, "", "crop_size: 7"), Phase::Test).unwrap();
    let (data, _) = forward(&mut net).unwrap();
    let img = &images[0];
    let (ho, wo) = ((img.height - crop) / 2, (img.width - crop) / 2);
    assert_eq!(data[0], img.data[(ho * img.width + wo) * c] as f32);
}

#[test]
fn shuffle_visits_every_image_once_per_epoch_and_rand_skip_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let (list, _) = indexed_list(tmp.path());
    let mut net = build(&image_net(&list, 8, "shuffle: true", ""), Phase::Train).unwrap();
    for epoch in 0..3 {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(forward(&mut net).unwrap().1);
        }
        let mut sorted = seen.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(
            sorted,
            (0..24).map(|i| i as f32).collect::<Vec<_>>(),
            "epoch {epoch}"
        );
        assert_ne!(seen, sorted, "shuffled");
    }
    let mut net = build(&image_net(&list, 4, "rand_skip: 20", ""), Phase::Train).unwrap();
    let first = forward(&mut net).unwrap().1;
    assert!(
        first.windows(2).all(|w| w[1] == (w[0] + 1.0) % 24.0),
        "consecutive after the skip: {first:?}"
    );
}

#[test]
fn imagedata_errors_name_the_list_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let img = imagedata_dir().join("imgs/00.png");
    let list = tmp.path().join("nolabel.txt");
    std::fs::write(&list, format!("{} 1\n{}\n", img.display(), img.display())).unwrap();
    let e = err_text(build(&image_net(&list, 2, "", ""), Phase::Test));
    assert!(
        e.contains(&format!("{}:2", list.display())) && e.contains("no label"),
        "{e}"
    );

    let missing = tmp.path().join("missing.png");
    let list = tmp.path().join("missing.txt");
    std::fs::write(
        &list,
        format!("{} 1\n{} 2\n", img.display(), missing.display()),
    )
    .unwrap();
    let mut net = build(&image_net(&list, 2, "", ""), Phase::Test).unwrap();
    let e = format!("{:#}", net.forward(&mut CaffeRng::new(1)).unwrap_err());
    assert!(
        e.contains(&format!("{}:2", list.display())) && e.contains(&missing.display().to_string()),
        "{e}"
    );
    // The failure is remembered: later forwards report it again instead of hanging.
    assert!(net.forward(&mut CaffeRng::new(1)).is_err());

    let list = tmp.path().join("first_missing.txt");
    std::fs::write(&list, format!("{} 2\n", missing.display())).unwrap();
    let e = err_text(build(&image_net(&list, 2, "", ""), Phase::Test));
    assert!(
        e.contains(&format!("{}:1", list.display())) && e.contains(&missing.display().to_string()),
        "{e}"
    );

    let e = err_text(build(
        &image_net(&tmp.path().join("none.txt"), 2, "", ""),
        Phase::Test,
    ));
    assert!(e.contains("none.txt"), "{e}");
    let e = err_text(build(
        &image_net(&list, 2, "new_height: 4", ""),
        Phase::Test,
    ));
    assert!(e.contains("new_height and new_width"), "{e}");
}

#[cfg(not(feature = "hdf5"))]
#[test]
fn hdf5_data_without_the_feature_explains_how_to_enable_it() {
    let e = err_text(build(
        r#"layer { name: "h" type: "HDF5Data" top: "data" hdf5_data_param { source: "x.txt" batch_size: 1 } }"#,
        Phase::Test,
    ));
    assert!(
        e.contains("without HDF5 support")
            && e.contains("--features hdf5")
            && e.contains("libhdf5-dev"),
        "{e}"
    );
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_data_matches_the_npy_files_with_wrap_around() {
    let dir = caffe_fixtures().join("e2e_hdf5/data");
    let tmp = tempfile::tempdir().unwrap();
    for (split, batch, passes) in [("train", 20usize, 45usize), ("test", 50, 5)] {
        let list = tmp.path().join(format!("{split}.txt"));
        std::fs::write(
            &list,
            format!("{}\n", dir.join(format!("{split}.h5")).display()),
        )
        .unwrap();
        let (shape, all) = read_npy_f32(&dir.join(format!("{split}_data.npy"))).unwrap();
        let (_, labels) = read_npy_f32(&dir.join(format!("{split}_label.npy"))).unwrap();
        let (n, per) = (shape[0], shape[1..].iter().product::<usize>());
        let text = format!(
            r#"layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{}" batch_size: {batch} }} }}"#,
            list.display()
        );
        let mut net = build(&text, Phase::Train).unwrap();
        for k in 0..passes {
            let (data, label) = forward(&mut net).unwrap();
            for b in 0..batch {
                let r = (k * batch + b) % n;
                assert_eq!(label[b], labels[r], "{split} batch {k} item {b}");
                assert_eq!(
                    &data[b * per..(b + 1) * per],
                    &all[r * per..(r + 1) * per],
                    "{split} batch {k}"
                );
            }
        }
    }
    // Errors: a dataset named like a top that the file lacks.
    let list = tmp.path().join("bad.txt");
    std::fs::write(&list, format!("{}\n", dir.join("train.h5").display())).unwrap();
    let text = format!(
        r#"layer {{ name: "data" type: "HDF5Data" top: "pixels" hdf5_data_param {{ source: "{}" batch_size: 2 }} }}"#,
        list.display()
    );
    let e = err_text(build(&text, Phase::Train));
    assert!(
        e.contains("no dataset 'pixels'") && e.contains("train.h5"),
        "{e}"
    );
}

/// Reads a binary PGM/PPM: (width, height, channels, samples).
fn read_pnm(path: &Path) -> (usize, usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..pos]).into_owned());
    }
    let channels = if fields[0] == "P6" { 3 } else { 1 };
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, channels, bytes[pos + 1..].to_vec())
}

#[test]
fn jpeg_decoding_equals_libjpeg_turbo_for_every_sampling_and_mode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    names.sort();
    assert!(names.len() >= 8);
    for jpg in names {
        let stem = jpg.file_stem().unwrap().to_string_lossy().into_owned();
        let (w, h, ch, want) = read_pnm(&dir.join(format!("{stem}.ppm")));
        let img = read_image(&jpg, ColorMode::Color).unwrap();
        assert_eq!((img.width, img.height, img.channels), (w, h, 3), "{stem}");
        // The references are RGB (or gray); crema's images are BGR like OpenCV's.
        let rgb: Vec<u8> = if ch == 3 {
            img.data
                .chunks(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect()
        } else {
            img.data.chunks(3).map(|p| p[0]).collect()
        };
        assert_eq!(
            rgb, want,
            "{stem}: colour decode differs from libjpeg-turbo"
        );
        let (_, _, _, want_gray) = read_pnm(&dir.join(format!("{stem}.gray.pgm")));
        let gray = read_image(&jpg, ColorMode::Gray).unwrap();
        assert_eq!(
            gray.data, want_gray,
            "{stem}: gray decode differs from libjpeg-turbo"
        );
        let native = read_image(&jpg, ColorMode::Native).unwrap();
        assert_eq!(
            native.channels,
            if ch == 3 { 3 } else { 1 },
            "{stem}: IMREAD_ANYCOLOR channels"
        );
    }
}
