import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'

export type HqRegistryConfigResult = {rootcertbundle: string; config: string; files: string[]}

export default class HqRegistryConfig extends JilCommand {
  static override summary = 'The registry configuration that makes it accept only HQ\'s tokens.'
  static override description = 'Prints the `auth: token:` snippet for a Docker/OCI registry (realm = HQ\'s /v1/registry/token) and the token-signing certificate for its rootcertbundle; with --out, writes jil-token.crt and auth.yml there.'
  static override examples = ['<%= config.bin %> hq registry config --out /etc/docker/registry']
  static override flags = {...hqFlags, out: Flags.string({description: 'Directory to write jil-token.crt and auth.yml into.', helpValue: 'DIR'})}

  async run(): Promise<HqRegistryConfigResult> {
    const {flags} = await this.parse(HqRegistryConfig)
    const [{openHqSession}, {writeFileAtomic}, {join}] = await Promise.all([import('../../../cli/hq-session.js'), import('../../../shared/files.js'), import('node:path')])
    const {client} = await openHqSession(flags)
    try {
      const r = await client.request<{rootcertbundle: string; config: string}>('GET', '/v1/registry/config')
      const config = r.config.replace(/realm: https:\/\/[^/]+/, `realm: ${client.baseUrl}`)
      const files: string[] = []
      if (flags.out) {
        await writeFileAtomic(join(flags.out, 'jil-token.crt'), r.rootcertbundle, 0o644)
        await writeFileAtomic(join(flags.out, 'auth.yml'), config.replace('/etc/docker/registry/jil-token.crt', join(flags.out, 'jil-token.crt')), 0o644)
        files.push(join(flags.out, 'jil-token.crt'), join(flags.out, 'auth.yml'))
      }
      return {rootcertbundle: r.rootcertbundle, config, files}
    } finally {
      await client.close()
    }
  }

  protected override render(r: HqRegistryConfigResult): void {
    if (r.files.length) this.progress(`Wrote ${r.files.join(', ')}; merge auth.yml into the registry's config.yml`)
    else process.stdout.write(r.config + '\n# rootcertbundle:\n' + r.rootcertbundle)
  }
}
