//! Sample-rate conversion to the prompt rate: a windowed-sinc (Kaiser) low-pass evaluated at
//! each output instant. Apart from the decoders because it is pure numerics, tested on its own.
//!
//! The cutoff sits below the lower of the two Nyquist frequencies so going down from
//! 44.1/48 kHz does not alias.

/// Zero crossings of the sinc on each side of the centre.
const SINC_ZEROS: f64 = 24.0;
/// Cutoff as a fraction of the lower Nyquist frequency (3.6 kHz when going to 8 kHz).
const ROLLOFF: f64 = 0.9;
const KAISER_BETA: f64 = 8.6;
/// Kernel table points per input sample (linear interpolation between them).
const TABLE_RES: usize = 256;

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

/// Resamples mono audio from `from` Hz to `to` Hz.
pub(super) fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    // Cutoff in cycles per input sample.
    let cutoff = 0.5 * ratio.min(1.0) * ROLLOFF;
    let half = SINC_ZEROS / (2.0 * cutoff);
    let table_len = (half * TABLE_RES as f64).ceil() as usize + 2;
    let i0_beta = bessel_i0(KAISER_BETA);
    let table: Vec<f32> = (0..table_len)
        .map(|i| {
            let x = i as f64 / TABLE_RES as f64;
            if x >= half {
                return 0.0;
            }
            let arg = 2.0 * cutoff * x;
            let sinc = if arg == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            let r = x / half;
            let w = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            (2.0 * cutoff * sinc * w) as f32
        })
        .collect();
    let kernel = |x: f64| -> f32 {
        let p = x.abs() * TABLE_RES as f64;
        let i = p as usize;
        let f = (p - i as f64) as f32;
        match (table.get(i), table.get(i + 1)) {
            (Some(a), Some(b)) => a + (b - a) * f,
            _ => 0.0,
        }
    };

    let n_in = input.len() as u64;
    let (from64, to64) = (u64::from(from), u64::from(to));
    let n_out = (n_in * to64).div_ceil(from64);
    let reach = half.ceil() as i64;
    let taps = (2 * reach + 2) as usize;
    // Output instants fall on `to / gcd` distinct fractional phases (80 for 44.1 kHz): their
    // normalised weights are computed once each, unless that table would be large.
    let phases = to64 / gcd(from64, to64);
    let step = to64 / phases;
    let mut cache: Vec<Vec<f32>> = if phases.saturating_mul(taps as u64) <= 1 << 20 {
        vec![Vec::new(); phases as usize]
    } else {
        Vec::new()
    };
    let weights_for = |frac_num: u64| -> Vec<f32> {
        let frac = frac_num as f64 / to as f64;
        let mut w: Vec<f32> = (0..taps)
            .map(|t| kernel((t as i64 - reach) as f64 - frac))
            .collect();
        // Normalising by the full kernel sum keeps the DC gain at exactly 1 for every phase.
        let sum: f32 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|x| *x /= sum);
        }
        w
    };
    let mut out = Vec::with_capacity(n_out as usize);
    for k in 0..n_out {
        // Exact position of output sample k on the input grid: k * from / to.
        let num = k * from64;
        let base = (num / to64) as i64;
        let frac_num = num % to64;
        let scratch;
        let weights: &[f32] = match cache.get_mut((frac_num / step) as usize) {
            Some(slot) => {
                if slot.is_empty() {
                    *slot = weights_for(frac_num);
                }
                slot
            }
            None => {
                scratch = weights_for(frac_num);
                &scratch
            }
        };
        let first = base - reach;
        let acc: f32 = if first >= 0 && (first as usize + taps) <= input.len() {
            let start = first as usize;
            input
                .get(start..start + taps)
                .map(|win| win.iter().zip(weights).map(|(s, w)| s * w).sum())
                .unwrap_or(0.0)
        } else {
            // Near the edges: samples outside the input count as silence.
            weights
                .iter()
                .enumerate()
                .filter_map(|(t, w)| {
                    let j = usize::try_from(first + t as i64).ok()?;
                    input.get(j).map(|s| s * w)
                })
                .sum()
        };
        out.push(acc);
    }
    out
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}
