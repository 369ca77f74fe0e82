//! The whole `vchat` command line, with the GrayscaleExecutor added to the
//! built-in executors: `vchat-grayscale flow --uses flow.yml`.

fn main() -> std::process::ExitCode {
    let mut registry = vchat_cli::builtin_registry();
    vchat_example_grayscale::register(&mut registry);
    vchat_cli::main_with(registry)
}
