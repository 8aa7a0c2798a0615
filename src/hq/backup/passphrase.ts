import {JilError} from '../../shared/errors.js'
import {readSecret} from '../../shared/files.js'

/**
 * The passphrase in a file (0600, like a key: a passphrase on the command line would show in `ps`
 * and shell history). One trailing newline is not part of it, so `echo … > file` works.
 */
export async function readPassphraseFile(path: string): Promise<string> {
  const text = (await readSecret(path, 'passphrase file')).replace(/\r?\n$/, '')
  if (text.length === 0) throw new JilError('PASSPHRASE_EMPTY', `the passphrase file ${path} is empty`, {hint: 'write a long random passphrase into it, e.g. openssl rand -base64 32 > FILE; chmod 600 FILE'})
  return text
}
