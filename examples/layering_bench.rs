//! Times layer planning on a generated 3000-path closure, for
//! `scripts/bench` (SPEC §10: the default pipeline within 50 ms).
//!
//! The closure is deterministic and shaped like a real one: each path
//! references up to 12 earlier paths, half of them among the 50 nearest,
//! some refer to themselves. Prints one tab-separated line per strategy:
//! `layering <strategy> <paths> <layers> <median ms> <min ms>`.
//!
//! ```sh
//! cargo run --release --example layering_bench [PATHS] [RUNS]
//! ```
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use nixlayer::closure::{ClosureGraph, PathInfo};
use nixlayer::nix::{base32, StoreDir, StorePath};
use nixlayer::plan::{plan_layers, Pipeline};

/// xorshift64*: the same closure on every machine and run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn closure(n: usize) -> ClosureGraph {
    const NAMES: &[&str] = &[
        "glibc-2.40",
        "openssl-3.0",
        "python3-3.12",
        "lib",
        "app",
        "a-b",
    ];
    let mut rng = Rng(42);
    let paths: Vec<StorePath> = (0..n)
        .map(|i| {
            let mut hash = [0u8; 20];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            hash[8..16].copy_from_slice(&rng.next().to_le_bytes());
            let name = NAMES[rng.below(NAMES.len())];
            let text = format!("/nix/store/{}-{name}", base32::encode(&hash));
            StorePath::parse(&StoreDir::default(), &text).expect("a valid store path")
        })
        .collect();
    let infos = (0..n)
        .map(|i| {
            let mut references = Vec::new();
            if i > 0 {
                for _ in 0..rng.below(13) {
                    let back = rng.below(i);
                    let j = if rng.next().is_multiple_of(2) {
                        i - 1 - back % i.min(50)
                    } else {
                        back
                    };
                    references.push(paths[j].clone());
                }
                if rng.below(8) == 0 {
                    references.push(paths[i].clone());
                }
            }
            PathInfo {
                path: paths[i].clone(),
                nar_hash: None,
                nar_size: rng.next() % 10_000_000,
                references,
            }
        })
        .collect();
    ClosureGraph::new(infos).expect("an acyclic closure")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(21);
    let graph = closure(n);
    for (name, pipeline) in [
        ("popularity", Pipeline::popularity(99)),
        ("auto", Pipeline::auto(99)),
    ] {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut layers = 0;
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            let plan = plan_layers(&graph, &[], &pipeline).expect("a plan");
            times.push(start.elapsed());
            layers = plan.layers.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "layering\t{name}\t{n}\t{layers}\t{:.1}\t{:.1}",
            ms(times[times.len() / 2]),
            ms(times[0])
        );
    }
}
