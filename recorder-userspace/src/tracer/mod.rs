//! Kernel side: loads the eBPF programs, arms the mount-namespace filter, and streams events.
