// Package syncbench benchmarks hagent's configuration sync (docs/configsync.md) in the
// netns lab of package lab, against rsync over ssh between the same two
// namespaces in the same run:
//
//   - change-to-applied latency of one small file over 200 changes (p50,
//     p99, max): hagent from the rename on the primary until the
//     secondary's copy has the new content (polled every millisecond);
//     rsync from the same rename until `rsync -a` of that file returns
//     (content then checked), once with a fresh ssh connection per run and
//     once over a multiplexed master connection;
//   - full sync of 10 000 files / 50 MiB: hagent from the start of a node
//     with an empty directory until both report the same tree checksum;
//     rsync `-a --delete` of the same tree onto an empty directory, also
//     with --fsync (hagent fsyncs every file and its directory). Before
//     the full syncs the benchmark waits vm.dirty_expire_centisecs (30 s)
//     and it never deletes a tree right before a run: on an ext4 without
//     journal, inodes freed in the last 30 s slow every file creation.
//
// TestSyncBench runs only with HAGENT_BENCH=1 (`make bench`); it prints a
// table and writes bench-results/sync.md and sync.json at the repository
// root. HAGENT_SYNC_BENCH_CHANGES and HAGENT_SYNC_BENCH_REPS override the
// number of changes (200) and full-sync repetitions (3). The non-test code
// is the report: percentiles, the Markdown tables and the JSON.
package syncbench
