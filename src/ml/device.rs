//! Device selection, in one place so the CUDA build can extend it.

use candle_core::Device;

/// The device for a stage's `device:` setting: `cpu`, `auto`, `cuda` or `cuda:N`.
pub fn select(name: &str) -> Result<Device, String> {
    match name {
        "cpu" | "auto" => Ok(Device::Cpu),
        other if other == "cuda" || other.starts_with("cuda:") => {
            Err(format!("device `{other}` needs a CUDA build of flow; this build runs on the CPU only"))
        }
        other => Err(format!("unknown device `{other}`")),
    }
}
