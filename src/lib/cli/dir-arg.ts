/**
 * The store directory of a command: a positional `DIR`, or `--dir DIR` (which is also how the
 * launcher passes the original tools' `-dir DIR`). Exactly one directory is required.
 */
import path from 'node:path';
import { Args, type Command, Flags } from '@oclif/core';

export const dirArg = Args.string({ description: 'the store directory (or --dir DIR, -dir DIR)' });

export const dirFlag = Flags.string({ description: 'the store directory, as the original tools take it (-dir DIR)', helpValue: 'DIR' });

export function resolveDir(command: Command, positional: string | undefined, flag: string | undefined): string {
  if (positional !== undefined && flag !== undefined && path.resolve(positional) !== path.resolve(flag)) {
    command.error(`two directories given (${positional} and --dir ${flag}): give one`, { exit: 2 });
  }
  const dir = positional ?? flag;
  if (dir === undefined || dir === '') {
    command.error(`a store directory is required: ${command.config.bin} ${command.id ?? '<command>'} DIR (or -dir DIR)`, { exit: 2 });
  }
  return dir;
}
