//! The per-call hot paths on their own, so a regression in one shows up in review:
//! `cargo bench --bench hotpath` (add `-- --quick` for a fast pass).
//!
//! - `encode/*`, `decode/*`: a call's argument tuple through each codec in
//!   `farcall::AnyCodec::ALL`: `(u64, u64)` (as in `add(a, b)`) and
//!   `(String, Vec<u8>)` with a 1 KiB buffer.
//! - `dispatch/local_add`: one call on a local object (`AdderClient::from_local`),
//!   no transport: the client, dispatch and reply machinery alone.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use farcall::AnyCodec;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[path = "shared/adder.rs"]
mod adder;

use adder::{Add, AdderClient};

/// `add(a, b)`'s arguments.
fn small() -> (u64, u64) {
    (1, 1 << 40)
}

/// A name and a 1 KiB buffer.
fn blob() -> (String, Vec<u8>) {
    (
        "attachment.bin".to_string(),
        (0..1024).map(|i| i as u8).collect(),
    )
}

fn encode_one<T: Serialize>(c: &mut Criterion, name: &str, value: &T) {
    let mut group = c.benchmark_group("encode");
    for &codec in AnyCodec::ALL {
        let mut out = Vec::with_capacity(8192);
        group.bench_function(BenchmarkId::new(name, codec.name()), |b| {
            b.iter(|| {
                out.clear();
                codec.encode(black_box(value), &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decode_one<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    c: &mut Criterion,
    name: &str,
    value: &T,
) {
    let mut group = c.benchmark_group("decode");
    for &codec in AnyCodec::ALL {
        let mut bytes = Vec::new();
        codec.encode(value, &mut bytes).unwrap();
        assert_eq!(&codec.decode::<T>(&bytes).unwrap(), value);
        group.bench_function(BenchmarkId::new(name, codec.name()), |b| {
            b.iter(|| codec.decode::<T>(black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

fn codecs(c: &mut Criterion) {
    encode_one(c, "u64_pair", &small());
    encode_one(c, "string_bytes_1k", &blob());
    decode_one(c, "u64_pair", &small());
    decode_one(c, "string_bytes_1k", &blob());
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let adder = AdderClient::from_local(Add);
    assert_eq!(rt.block_on(adder.add(1, 2)).unwrap(), 3);
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("local_add", |b| {
        b.to_async(&rt)
            .iter(|| async { adder.add(black_box(1), black_box(2)).await.unwrap() })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = codecs, dispatch
}
criterion_main!(benches);
