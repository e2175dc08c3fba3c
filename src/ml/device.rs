//! Device selection, in one place: what `cpu`, `cuda`, `cuda:N` and `auto` ([`spec::Device`])
//! mean in this build, how many GPUs the scheduler may hand out, and how a run record names
//! the device it used.

use candle_core::Device;

use crate::spec;

/// A device that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[cfg(not(feature = "cuda"))]
    #[error(
        "device `cuda:{0}` was asked for, but this build of flow runs on the CPU only; build it with `--features cuda` (scripts/build-cuda.sh does, without a CUDA install; docs/gpu.md)"
    )]
    NoCuda(usize),
    #[cfg(feature = "cuda")]
    #[error("device `cuda:{n}` was asked for, but this machine has {count} GPU(s) visible")]
    Missing { n: usize, count: usize },
    #[cfg(feature = "cuda")]
    #[error("cannot open `cuda:{n}`")]
    Open { n: usize, source: candle_core::Error },
}

/// The device for a stage's `device:` setting.
pub fn select(device: spec::Device) -> Result<Device, DeviceError> {
    match device {
        spec::Device::Cpu => Ok(Device::Cpu),
        spec::Device::Auto if gpu_count() > 0 => cuda(0),
        spec::Device::Auto => Ok(Device::Cpu),
        spec::Device::Cuda(n) => cuda(n.unwrap_or(0)),
    }
}

/// How a run record names the device: `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3, driver 13.0)`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => gpu::describe(device.location()),
        other => format!("{:?}", other.location()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NoCuda(n))
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device, DeviceError> {
    let count = gpu_count();
    if n >= count {
        return Err(DeviceError::Missing { n, count });
    }
    Device::new_cuda(n).map_err(|source| DeviceError::Open { n, source })
}

/// The GPUs visible to this process (`CUDA_VISIBLE_DEVICES` applies); 0 in a build without
/// CUDA or on a machine without a driver.
#[cfg(not(feature = "cuda"))]
pub fn gpu_count() -> usize {
    0
}

#[cfg(feature = "cuda")]
pub fn gpu_count() -> usize {
    gpu::count()
}

#[cfg(feature = "cuda")]
mod gpu {
    use candle_core::DeviceLocation;
    use candle_core::cuda_backend::cudarc::driver::{CudaContext, sys};

    pub fn count() -> usize {
        static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *COUNT.get_or_init(|| CudaContext::device_count().map_or(0, |n| usize::try_from(n).unwrap_or(0)))
    }

    pub fn describe(location: DeviceLocation) -> String {
        let DeviceLocation::Cuda { gpu_id } = location else { return format!("{location:?}") };
        let name = CudaContext::new(gpu_id).and_then(|c| c.name()).unwrap_or_else(|e| format!("unnamed: {e}"));
        let mut version = 0;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
        let driver = match unsafe { sys::cuDriverGetVersion(&mut version) } {
            sys::CUresult::CUDA_SUCCESS => format!("{}.{}", version / 1000, version % 1000 / 10),
            _ => "unknown".to_owned(),
        };
        format!("cuda:{gpu_id} ({name}, driver {driver})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_map_to_devices_and_a_cpu_build_explains_how_to_get_cuda() {
        assert!(matches!(select(spec::Device::Cpu), Ok(Device::Cpu)));
        assert_eq!(describe(&Device::Cpu), "cpu");
        if gpu_count() == 0 {
            assert!(matches!(select(spec::Device::Auto), Ok(Device::Cpu)), "auto falls back to the CPU");
        }
        #[cfg(not(feature = "cuda"))]
        {
            let e = select(spec::Device::Cuda(Some(1))).unwrap_err().to_string();
            assert!(e.starts_with("device `cuda:1` was asked for") && e.contains("--features cuda"), "{e}");
        }
    }
}
