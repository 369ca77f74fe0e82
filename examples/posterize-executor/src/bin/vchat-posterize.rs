//! The whole `vchat` command line, with the PosterizeExecutor added to the
//! built-in executors: `vchat-posterize flow --uses flow.yml`.

fn main() -> std::process::ExitCode {
    let mut registry = vchat_cli::builtin_registry();
    vchat_example_posterize::register(&mut registry);
    vchat_cli::main_with(registry)
}
