fn main() -> std::process::ExitCode {
    vchat_cli::main_with(vchat_cli::builtin_registry())
}
