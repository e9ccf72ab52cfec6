//! Each subcommand's examples: shown by `--help` after the options and, as the EXAMPLES
//! section, in its man page (`completions::manpage`). The README's commands, one per line
//! with what it does.

/// `refgate`.
pub const REFGATE: &str = "\
Examples:
  sudo refgate record --scratch -o trace.bin   record a built-in workload on a scratch btrfs
  refgate replay trace.bin --threads 32        replay it on 32 virtual CPUs under seed
  refgate compare trace.bin -o plots/          every headline policy × 1..64 CPUs, and plots
  refgate inspect trace.bin                    what the trace holds";

/// `refgate record`.
pub const RECORD: &str = "\
Examples:
  sudo refgate record                          every btrfs, until Ctrl-C, into trace.bin
  sudo refgate record --mount /srv --duration 60 -o srv.bin
                                               one filesystem for a minute
  sudo refgate record --scratch                a loopback btrfs, a built-in workload, torn down after
  sudo refgate record --scratch --cleanup      remove what a killed --scratch run left behind";

/// `refgate replay`.
pub const REPLAY: &str = "\
Examples:
  refgate replay                               the bundled sample, 32 virtual CPUs, seed
  refgate replay trace.bin --threads 32 --policy pre
                                               the pre-3.9 runner on 32 virtual CPUs
  refgate replay trace.bin --policy 6.18 --json
                                               modern, one JSON object (docs/schema/)
  refgate replay trace.bin --engine threads --threads 8
                                               8 real threads instead of virtual CPUs
  refgate replay trace.bin --validate          modern at recorded speed against the recording
  refgate replay trace.bin --timeline t.json   per-CPU timeline for ui.perfetto.dev";

/// `refgate compare`.
pub const COMPARE: &str = "\
Examples:
  refgate compare trace.bin -o plots/          pre, seed, modern × 1..64 CPUs; SVG and PNG plots
  refgate compare trace.bin --policies all --cpus 1,8,32 --csv
                                               every registered policy, as CSV";

/// `refgate policies`.
pub const POLICIES: &str = "\
Examples:
  refgate policies                             names, kernels, what each does, aliases
  refgate policies --json                      the same as one JSON object";

/// `refgate inspect`.
pub const INSPECT: &str = "\
Examples:
  refgate inspect trace.bin                    header, probes, events, tasks, contention
  refgate inspect trace.bin --json             the same as one JSON object (docs/schema/)";

/// `refgate export`.
pub const EXPORT: &str = "\
Examples:
  refgate export trace.bin                     trace.json for ui.perfetto.dev
  refgate export trace.bin --format jsonl -o - one JSON object per event on stdout, for jq
  refgate export trace.bin --format parquet    trace.parquet for DuckDB, Spark, Trino";

/// `refgate completions`.
pub const COMPLETIONS: &str = "\
Examples:
  refgate completions bash > /etc/bash_completion.d/refgate
  refgate completions zsh > \"${fpath[1]}/_refgate\"";

/// `refgate manpage`.
pub const MANPAGE: &str = "\
Examples:
  refgate manpage | man -l -                   read refgate(1) now
  refgate manpage --dir /usr/local/share/man/man1
                                               install refgate.1 and a page per subcommand";
