// Loaded with --import into a measured process: prints its peak RSS (MB) to stderr as it exits.
process.on('exit', () => process.stderr.write(`\npeak-rss-mb ${process.resourceUsage().maxRSS / 1024}\n`))
