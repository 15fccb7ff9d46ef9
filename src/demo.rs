pub fn run(_server: Option<std::path::PathBuf>, _every: u64, _duration: Option<u64>) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet")
}
