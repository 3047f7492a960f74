//! serve (pending the ADS service)
pub fn run_blocking(_a: crate::cli::ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
