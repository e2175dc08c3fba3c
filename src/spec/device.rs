//! Where a stage computes: [`Device`] (`device:`, `--device`) and [`GpuShare`] (`gpu_share:`),
//! parsed once here for every layer that needs them. Neither enters the fingerprint.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stage's `device:`: `auto` (the default), `cpu`, `cuda` (any GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The GPU when the build has CUDA and the machine a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A GPU: `None` for any free one, `Some(n)` for GPU `n` as `CUDA_VISIBLE_DEVICES` numbers
    /// them.
    Cuda(Option<usize>),
}

/// Why a device name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}`: devices are `cpu`, `cuda`, `cuda:N` or `auto`")]
pub struct DeviceError(pub String);

impl FromStr for Device {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| DeviceError(other.to_owned())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// How much of one GPU a stage holds while it runs there, in thousandths: stages share a GPU
/// while their shares sum to at most one whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpuShare(u16);

impl GpuShare {
    pub const WHOLE: GpuShare = GpuShare(1000);

    /// A `gpu_share:` value: a number over 0 and at most 1 (rounded to thousandths, at least
    /// one).
    pub fn from_fraction(v: &serde_json::Value) -> Result<Self, String> {
        match v.as_f64() {
            Some(x) if x > 0.0 && x <= 1.0 => Ok(GpuShare(((x * 1000.0).round() as u16).max(1))),
            _ => Err(format!("`gpu_share` must be a number over 0 and at most 1, not {v}")),
        }
    }

    /// In thousandths of a GPU.
    pub const fn thousandths(self) -> u16 {
        self.0
    }
}

impl Default for GpuShare {
    fn default() -> Self {
        GpuShare::WHOLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, device) in [
            ("auto", Device::Auto),
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(None)),
            ("cuda:3", Device::Cuda(Some(3))),
        ] {
            assert_eq!(text.parse::<Device>(), Ok(device));
            assert_eq!(device.to_string(), text);
            assert_eq!(serde_json::to_string(&device).unwrap(), format!("\"{text}\""));
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            assert_eq!(bad.parse::<Device>(), Err(DeviceError(bad.to_owned())), "{bad}");
        }
        assert!(serde_json::from_str::<Device>("\"tpu\"").is_err());
    }

    #[test]
    fn shares_are_fractions_of_one_gpu() {
        let share = |v: serde_json::Value| GpuShare::from_fraction(&v).map(GpuShare::thousandths);
        assert_eq!(share(0.5.into()), Ok(500));
        assert_eq!(share(1.into()), Ok(1000));
        assert_eq!(share(0.0001.into()), Ok(1), "the smallest share is one thousandth");
        for bad in [0.into(), 1.5.into(), (-0.5).into(), "half".into()] {
            assert!(share(bad).is_err());
        }
        assert_eq!(GpuShare::default(), GpuShare::WHOLE);
    }
}
