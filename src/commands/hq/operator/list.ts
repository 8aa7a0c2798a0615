import {JilCommand, hqFlags} from '../../../base-command.js'
import {table} from '../../../cli/table.js'

export type HqOperatorListResult = {operators: {name: string; kyc: string; nodes: number; updated_at: string}[]}

export default class HqOperatorList extends JilCommand {
  static override summary = 'List operators, their KYC status and node counts.'
  static override flags = {...hqFlags}

  async run(): Promise<HqOperatorListResult> {
    const {flags} = await this.parse(HqOperatorList)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.request<HqOperatorListResult>('GET', '/v1/operators'))
  }

  protected override render(r: HqOperatorListResult): void {
    this.log(table(r.operators, [{key: 'name', header: 'operator'}, {key: 'kyc', header: 'kyc'}, {key: 'nodes', header: 'nodes'}, {key: 'updated_at', header: 'updated'}]))
  }
}
