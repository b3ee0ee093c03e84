import { cleanupTempDirs } from './helpers/paths.js';

// Root hook: every temporary directory a test made is removed when the run ends.
after(async () => {
  await cleanupTempDirs();
});
