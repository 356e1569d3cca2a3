//! Transparent huge pages for this process, the one setting of the host the server changes.

/// Turns transparent huge pages on or off for this process (Linux; elsewhere a no-op).
///
/// Off by default: mimalloc asks for huge pages on its arenas, and on a host whose THP defrag
/// policy is `madvise` (the kernel's default) a fault on a fresh arena may compact memory and
/// zero 2 MB before the request that touched it can go on, which shows in the tail latency
/// (README, "Performance"). A very large model may gain from the fewer TLB misses of huge
/// pages, hence the setting.
pub fn set_transparent_huge_pages(allowed: bool) {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::prctl::set_thp_disable(!allowed) {
        tracing::warn!(%error, "could not change transparent huge pages for this process");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
}
