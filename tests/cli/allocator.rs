//! The binary's allocator settings: `.cargo/config.toml` builds mimalloc with on-demand arena
//! commit (`MI_DEFAULT_ARENA_EAGER_COMMIT=0`), which keeps the daemon with 10,000 jobs at
//! 86 MiB instead of 120 MiB (docs/daemon.md "Figures"). A build setting is easy to lose (a
//! `CFLAGS` in the environment replaces it), so the built binary is asked: mimalloc prints its
//! options when `MIMALLOC_VERBOSE=1`.

use assert_cmd::Command;

#[test]
fn the_binary_commits_mimalloc_arena_memory_on_demand() {
    let out = Command::cargo_bin("restorectl")
        .unwrap()
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("option 'arena_eager_commit': 0"),
        "mimalloc was built without -DMI_DEFAULT_ARENA_EAGER_COMMIT=0 (is CFLAGS set in the \
         environment? it replaces the one in .cargo/config.toml); its options:\n{stderr}"
    );
}
