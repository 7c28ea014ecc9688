//! The integration tests, as one test binary (one link instead of one per
//! area). Each module is one area; `support` holds the sandbox, the loopback
//! sshd harness and the helpers the areas share.

mod support;

mod attack_17;
mod attack_17b;
mod attack_18;
mod attack_20;
mod attack_clock;
mod bad_input;
mod claim_protocol;
mod cli_conventions;
mod clock;
mod concurrency;
mod container;
mod crash_restart;
mod demo;
mod deploy_hook;
mod doctor;
mod e2e_ssh;
mod engine_happy_path;
mod env_example;
mod env_file;
mod explain;
mod gen_secrets;
mod git_safety;
mod history_damage;
mod history_hmac;
mod loopback_recipe;
mod machine_rows;
mod machine_table;
mod manual;
mod merge_stamp_oracle;
mod model;
mod no_host_literals;
mod operating;
mod operator_views;
mod panic_lints;
mod purity;
mod record_survives;
mod replay_corpus;
mod repos_dir_identity;
mod result_deadline;
mod result_write;
mod secret_scan;
mod sshd_smoke;
mod status;
mod watch;
mod worktree_config;
