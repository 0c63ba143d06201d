//! Every fuzz target on the stable compiler: each input a past fuzzing run crashed on (kept in
//! `regressions/<target>/` once fixed), then pseudo-random inputs from a fixed seed, so the
//! suite checks the same assertions the fuzzer does, on every run.

use std::path::Path;

/// Pseudo-random inputs per target.
const INPUTS: usize = 3_000;

/// xorshift64*: deterministic, so a failure here reproduces.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn input(&mut self) -> Vec<u8> {
        let len = usize::try_from(self.next() % 512).unwrap_or(0);
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

#[test]
fn kept_crashes_no_longer_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, run) in ebb_fuzz::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            let data = std::fs::read(&path).expect("a readable regression input");
            println!("{name}: {}", path.display());
            run(&data);
            replayed += 1;
        }
    }
    println!("{replayed} kept crashes replayed");
}

#[test]
fn pseudo_random_inputs_hold_every_assertion() {
    for (i, (name, run)) in ebb_fuzz::TARGETS.iter().enumerate() {
        let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
        for n in 0..INPUTS {
            let data = bytes.input();
            // A panic names the target and the input's number, reproducible from the seed.
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: input {n} ({data:?}) panicked");
        }
    }
}
