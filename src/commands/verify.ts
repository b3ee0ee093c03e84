import { Command, Flags } from '@oclif/core';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import { chooseFormat, colorsFor, failOnUserError, formatBytes, progressBar } from '../lib/cli/output.js';
import { verifyStore } from '../lib/store/verify.js';

export default class Verify extends Command {
  static override summary = "Check a store's db, journal and blocks, and every live object's bytes.";

  static override description = `Checks that the db and journal decode, that every put points inside an existing block, that the db's next_backend_file covers the blocks it uses, and that every live object's bytes match the MD5 stored with it. Objects the original server wrote have no stored MD5: they are reported as unverifiable (no stored MD5), not as problems. Exits with status 1 and a list of problems if anything is wrong, 2 if the directory cannot be read at all. The store is read without the lock and never written.`;

  static override examples = ['<%= config.bin %> <%= command.id %> zipdir', '<%= config.bin %> <%= command.id %> -dir zipdir --json'];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    json: Flags.boolean({ description: 'the report as one JSON object' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Verify);
    const dir = resolveDir(this, args.dir, flags.dir);
    let report;
    const progress = { bar: undefined as ReturnType<typeof progressBar> | undefined };
    try {
      report = await verifyStore(dir, {
        onProgress: (done, total) => {
          progress.bar ??= progressBar('verifying', total);
          progress.bar.update(done);
        },
      });
    } catch (err) {
      failOnUserError(this, err);
    } finally {
      progress.bar?.stop();
    }
    if (chooseFormat(flags.json) === 'json') {
      this.log(JSON.stringify(report));
    } else {
      const colors = colorsFor();
      for (const note of report.notes) this.log(`${colors.dim('note:')} ${note}`);
      this.log(
        `${dir}: ${report.revisions} revisions, ${report.liveObjects} live objects: ${report.verified} verified by MD5, ` +
          `${report.unverifiable} unverifiable (no stored MD5); ${formatBytes(report.bytesRead)} read.`,
      );
      for (const problem of report.problems) this.log(`${colors.red('problem:')} ${problem.message}`);
      if (report.problems.length === 0) this.log(colors.green('OK'));
    }
    if (report.problems.length > 0) {
      this.error(`${report.problems.length} problem${report.problems.length === 1 ? '' : 's'} found in ${dir}`, { exit: 1 });
    }
  }
}
