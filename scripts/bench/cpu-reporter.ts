/**
 * Preloaded (`node --import`) into a server process the bench starts (the edge): answers
 * the bench's "cpu" message over the IPC channel with the process's CPU time so far
 * (process.cpuUsage(), all threads, µs), so the meter adds it to the servers' CPU at µs
 * precision. The channel is unref'd: it never keeps the process alive.
 */
process.on("message", (message: unknown) => {
  if (message !== "cpu") return;
  const { user, system } = process.cpuUsage();
  process.send?.({ cpuUs: user + system });
});
process.channel?.unref();
