import { expect } from 'chai';
import { normalizeGoFlags } from '../../src/lib/cli/go-flags.js';

describe('cli: Go-style flags', () => {
  it('turns single-dash words into long flags', () => {
    expect(normalizeGoFlags(['serve', '-dir', 'zipdir', '-bs=1024', '-addr', '127.0.0.1:1'])).to.deep.equal([
      'serve', '--dir', 'zipdir', '--bs=1024', '--addr', '127.0.0.1:1',
    ]);
  });

  it('leaves short flags, long flags, negative numbers and everything after -- alone', () => {
    expect(normalizeGoFlags(['-h', '--dir', 'd', '-5', '--', '-dir'])).to.deep.equal(['-h', '--dir', 'd', '-5', '--', '-dir']);
  });
});
