import {JilCommand, hqFlags} from '../../../base-command.js'
import {table} from '../../../cli/table.js'

export type HqUserListResult = {users: {name: string; role: string; created_at: string; revoked_at: string | null; cert_expires: string | null}[]}

export default class HqUserList extends JilCommand {
  static override summary = 'List HQ\'s users and their roles.'
  static override flags = {...hqFlags}

  async run(): Promise<HqUserListResult> {
    const {flags} = await this.parse(HqUserList)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqUserListResult>('GET', '/v1/users'))
  }

  protected override render(r: HqUserListResult): void {
    this.log(
      table(
        r.users.map((u) => ({...u, status: u.revoked_at ? 'revoked' : 'active'})),
        [
          {key: 'name', header: 'user'},
          {key: 'role', header: 'role'},
          {key: 'status', header: 'status'},
          {key: 'cert_expires', header: 'cert expires'},
          {key: 'created_at', header: 'created'},
        ],
      ),
    )
  }
}
