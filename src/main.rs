//! The `knative-pilot` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    knative_pilot::cli::main()
}
