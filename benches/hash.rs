//! Throughput of the hashing core by file-size class and thread count.
//!
//! Each class is a tree of seeded pseudo-random files (same bytes every run), written once
//! outside the timed loop; the timed body is the whole local recipe (walk, sort, tokenize, hash,
//! format) on a warm page cache, as `sealpush hash` runs it. `cargo bench --bench hash` takes
//! about a minute here; `cargo bench --bench hash -- sha256` runs only the SHA-256 group.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealpush::tree::{recipe_digest_of_dir, Collation, RecipeOptions};

/// (label, file size, file count): about 8–128 MiB per class.
const CLASSES: &[(&str, usize, usize)] = &[
    ("4KiB", 4 << 10, 2048),
    ("64KiB", 64 << 10, 256),
    ("1MiB", 1 << 20, 32),
    ("64MiB", 64 << 20, 2),
];

/// xorshift64: deterministic, fast, incompressible enough for a hash.
fn fill(seed: u64, buf: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn build(root: &Path, size: usize, count: usize) {
    let mut buf = vec![0u8; size];
    for i in 0..count {
        // 16 subdirectories, so the walk has something to do too.
        let dir = root.join(format!("d{:02}", i % 16));
        std::fs::create_dir_all(&dir).unwrap();
        fill(i as u64 + 1, &mut buf);
        std::fs::write(dir.join(format!("f{i:05}")), &buf).unwrap();
    }
}

fn bench_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("recipe");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &(label, size, count) in CLASSES {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        build(&root, size, count);
        group.throughput(Throughput::Bytes((size * count) as u64));
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let opts = RecipeOptions {
                threads: None, // the pool below is current inside install()
                collation: Collation::c(),
            };
            group.bench_with_input(
                BenchmarkId::new(format!("{threads}-threads"), label),
                &root,
                |b, root| {
                    b.iter(|| pool.install(|| recipe_digest_of_dir(root, &opts).unwrap().digest))
                },
            );
        }
    }
    group.finish();
}

/// SHA-256 alone, on buffers in memory: one message at a time (`sha2`) against
/// [`sealpush::sha256_many::digest_many`], which `pack` uses for a batch of small files.
fn bench_sha256(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    // 4 MiB per case: the size of one of pack's batches.
    for size in [1usize << 10, 16 << 10, 256 << 10, 4 << 20] {
        let bufs: Vec<Vec<u8>> = (0..(4 << 20) / size)
            .map(|i| {
                let mut b = vec![0u8; size];
                fill(i as u64 + 1, &mut b);
                b
            })
            .collect();
        let inputs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let label = format!("{}KiB", size >> 10);
        group.throughput(Throughput::Bytes(4 << 20));
        group.bench_with_input(
            BenchmarkId::new("one-at-a-time", &label),
            &inputs,
            |b, i| {
                b.iter(|| {
                    i.iter()
                        .map(|d| sealpush::digest::Digest::of(d))
                        .collect::<Vec<_>>()
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("digest_many", &label), &inputs, |b, i| {
            b.iter(|| sealpush::sha256_many::digest_many(i))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hash, bench_sha256);
criterion_main!(benches);
