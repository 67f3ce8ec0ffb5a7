// Package config loads, validates and serializes hagent's YAML configuration
// (every key with its default: testdata/example.yaml; the contract:
// docs/reference.md §2).
//
// A configuration file has three parts:
//
//   - top-level, node-local keys (control_socket, log_format, log_level);
//   - node: identity and election weight of this node (name, serial,
//     priority, override, realtime), never synchronized, as FGCP keeps the
//     hostname, priority and override local;
//   - cluster: everything the members must agree on. The primary
//     synchronizes this section to the secondaries, so it can be serialized
//     on its own with [MarshalCluster] and read back with [ParseCluster].
//
// Parsing is strict. The file is decoded into a yaml.Node tree, then walked
// against a fixed schema: unknown keys, duplicate keys, values of the wrong
// type and values out of range are all errors. (Walking the tree rather
// than decoding into structs with yaml.v3's KnownFields gives every error
// its key path and line, and lets all of them be reported at once; the
// walk also bounds list lengths so hostile input cannot make it work hard.) Every error carries the file,
// the line and the dotted key path (cluster.hbdev[1].priority), and all
// errors found are reported together as [Errors] rather than stopping at the
// first one. A key that is absent or null takes its default; [Default]
// returns a configuration with every default filled in.
//
// Reload. Every key of [Keys] has a [ReloadClass] (Key.Reload): live
// (a running agent applies a change on SIGHUP or a synchronized cluster
// section), restart (it keeps the running value and reports the key as
// waiting for a restart), or per key for a mapping whose keys decide.
// [KeepRunning] compares two configurations over [ReloadKeys], resolved to
// fields by [KeyField], and puts the restart keys back to their running
// values. TestKeysReloadClass fails for a key without a class and
// TestReloadKeysCoverConfig for a field of [Config] no key reaches, so a
// new key cannot be left out of reload.
//
// Durations are Go duration strings ("200ms", "20s"); a bare number is
// rejected because its unit would be a guess. Ethertypes are YAML integers
// (0x8890 or 34960) or strings ("0x8890").
//
// The key. [Load] checks cluster.password_file whenever the key is in use
// (heartbeat authentication, config sync or session pickup): a regular
// file, not a symbolic link (opened with O_NOFOLLOW and checked on the open
// descriptor), owned by root or by the effective uid when that is not
// root, with no permission for group or others, holding at least
// [MinKeyLen] bytes. [Cluster.Password] is the heartbeat password (nil when
// auth is false); [Cluster.ChannelKey] is the key of the sync and session
// channels whatever auth says, and fails rather than return no key.
// With auth: false and no key file, sync and session pickup are refused.
// [LoadLocal] adds the checks that need hagentd's directories: no sync
// path may cover the configuration file, the key file, the state or the
// runtime directory.
//
// [Keys] documents every key with its type, default and range; the man page
// hagent.yaml(5) is generated from it, and the tests fail when it and the
// decoder disagree.
package config
