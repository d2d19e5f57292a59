"""NVML access: the pynvml facade (binding), the replay backend and device readers."""
