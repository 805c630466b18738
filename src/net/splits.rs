//! Automatic Split layers (Caffe's `InsertSplits`): where one top feeds several bottoms (or
//! feeds one and is also a weighted loss), a Split layer gives each consumer its own copy so
//! that backward can sum their gradients.

use std::collections::HashMap;

use crate::proto::caffe::{LayerParameter, NetParameter};

pub fn split_layer_name(blob: &str, layer: &str, top_idx: usize) -> String {
    format!("{blob}_{layer}_{top_idx}_split")
}

pub fn split_blob_name(blob: &str, layer: &str, top_idx: usize, k: usize) -> String {
    format!("{blob}_{layer}_{top_idx}_split_{k}")
}

/// Returns `net` with Split layers inserted.
pub fn insert_splits(net: &NetParameter) -> NetParameter {
    // (layer, top index) of the latest producer of each blob name.
    let mut producer: HashMap<&str, (usize, usize)> = HashMap::new();
    // Number of readers of each top instance, and which (layer, bottom) reads which instance.
    let mut readers: HashMap<(usize, usize), usize> = HashMap::new();
    let mut bottom_src: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    let mut loss_weighted: HashMap<(usize, usize), f32> = HashMap::new();
    for (i, l) in net.layer.iter().enumerate() {
        for (j, b) in l.bottom.iter().enumerate() {
            if let Some(&src) = producer.get(b.as_str()) {
                bottom_src.insert((i, j), src);
                *readers.entry(src).or_default() += 1;
            }
        }
        for (j, t) in l.top.iter().enumerate() {
            producer.insert(t.as_str(), (i, j));
            if let Some(&w) = l.loss_weight.get(j) {
                if w != 0.0 {
                    loss_weighted.insert((i, j), w);
                }
            }
        }
    }
    let mut out = net.clone();
    out.layer.clear();
    // Next split output index to hand out, per top instance.
    let mut next_k: HashMap<(usize, usize), usize> = HashMap::new();
    for (i, l) in net.layer.iter().enumerate() {
        let mut layer = l.clone();
        for j in 0..layer.bottom.len() {
            if let Some(&src) = bottom_src.get(&(i, j)) {
                let n = readers[&src] + loss_weighted.contains_key(&src) as usize;
                if n > 1 {
                    let k = next_k
                        .entry(src)
                        .or_insert(loss_weighted.contains_key(&src) as usize);
                    let src_layer = &net.layer[src.0];
                    layer.bottom[j] =
                        split_blob_name(&layer.bottom[j], src_layer.name(), src.1, *k);
                    *k += 1;
                }
            }
        }
        let mut splits = Vec::new();
        for j in 0..layer.top.len() {
            let key = (i, j);
            let n =
                readers.get(&key).copied().unwrap_or(0) + loss_weighted.contains_key(&key) as usize;
            if n > 1 {
                let blob = layer.top[j].clone();
                let mut split = LayerParameter {
                    name: Some(split_layer_name(&blob, layer.name(), j)),
                    r#type: Some("Split".into()),
                    bottom: vec![blob.clone()],
                    ..Default::default()
                };
                for k in 0..n {
                    split.top.push(split_blob_name(&blob, layer.name(), j, k));
                }
                if let Some(&w) = loss_weighted.get(&key) {
                    // The loss moves to split output 0; the producer's own weight is cleared.
                    split.loss_weight = vec![0.0; n];
                    split.loss_weight[0] = w;
                    layer.loss_weight[j] = 0.0;
                }
                splits.push(split);
            }
        }
        out.layer.push(layer);
        out.layer.extend(splits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, bottoms: &[&str], tops: &[&str]) -> LayerParameter {
        LayerParameter {
            name: Some(name.into()),
            r#type: Some("X".into()),
            bottom: bottoms.iter().map(|s| s.to_string()).collect(),
            top: tops.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn splits_like_lenet() {
        let net = NetParameter {
            layer: vec![
                layer("mnist", &[], &["data", "label"]),
                layer("ip", &["data"], &["ip"]),
                layer("acc", &["ip", "label"], &["acc"]),
                layer("loss", &["ip", "label"], &["loss"]),
            ],
            ..Default::default()
        };
        let out = insert_splits(&net);
        let names: Vec<&str> = out.layer.iter().map(|l| l.name()).collect();
        assert_eq!(
            names,
            [
                "mnist",
                "label_mnist_1_split",
                "ip",
                "ip_ip_0_split",
                "acc",
                "loss"
            ]
        );
        assert_eq!(
            out.layer[4].bottom,
            ["ip_ip_0_split_0", "label_mnist_1_split_0"]
        );
        assert_eq!(
            out.layer[5].bottom,
            ["ip_ip_0_split_1", "label_mnist_1_split_1"]
        );
    }

    #[test]
    fn weighted_top_with_one_reader_is_split_and_loss_moves() {
        let mut l = layer("a", &[], &["x"]);
        l.loss_weight = vec![2.0];
        let net = NetParameter {
            layer: vec![l, layer("b", &["x"], &["y"])],
            ..Default::default()
        };
        let out = insert_splits(&net);
        assert_eq!(out.layer[0].loss_weight, [0.0]);
        assert_eq!(out.layer[1].loss_weight, [2.0, 0.0]);
        assert_eq!(out.layer[2].bottom, ["x_a_0_split_1"]);
    }
}
