fn main() -> std::process::ExitCode {
    vidtune::cli::main()
}
