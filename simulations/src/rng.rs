//! One seeded RNG for everything random, so a run is reproducible from its seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

use crate::state::lock;

pub struct SimRng(Mutex<StdRng>);

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE32HEX: &[u8] = b"0123456789abcdefghijklmnopqrstuv";

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(Mutex::new(StdRng::seed_from_u64(seed)))
    }

    /// True with probability `p` (clamped to 0..=1).
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        lock(&self.0).random_bool(p)
    }

    pub fn range(&self, lo: u64, hi_inclusive: u64) -> u64 {
        if hi_inclusive <= lo {
            return lo;
        }
        lock(&self.0).random_range(lo..=hi_inclusive)
    }

    pub fn unit(&self) -> f64 {
        lock(&self.0).random::<f64>()
    }

    fn pick_from(&self, alphabet: &[u8], len: usize) -> String {
        let mut rng = lock(&self.0);
        (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect()
    }

    /// Opaque token text (access tokens, resource ids).
    pub fn alnum(&self, len: usize) -> String {
        self.pick_from(ALNUM, len)
    }

    /// Google event ids use base32hex (`a-v0-9`).
    pub fn base32hex(&self, len: usize) -> String {
        self.pick_from(BASE32HEX, len)
    }

    pub fn bytes(&self, len: usize) -> Vec<u8> {
        let mut rng = lock(&self.0);
        (0..len).map(|_| rng.random::<u8>()).collect()
    }

    pub fn uuid(&self) -> uuid::Uuid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.bytes(16));
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}
