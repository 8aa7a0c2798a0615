import {Box, Text} from 'ink'

import {CERT_BUCKETS, fit, type CertBucket, type Security as SecurityData} from '../model.js'
import {Line, SEVERITY_COLOR, tone, type Frame} from './common.js'

export type SecurityProps = Frame & {data: SecurityData}

const BUCKET_COLOR: Record<CertBucket, string> = {expired: 'red', '<7d': 'red', '<10d': 'yellow', '<30d': 'cyan', ok: 'green', unknown: 'gray'}

/** Certificate expiry per zone, the certificates expiring first, unsigned images, critical findings. */
export function Security({data, width, height, colors}: SecurityProps) {
  const buckets = width >= 100 ? CERT_BUCKETS : CERT_BUCKETS.filter((b) => b !== 'unknown' && b !== '<30d')
  const rest = Math.max(3, height - data.certGrid.length - 6)
  const perList = Math.max(1, Math.floor(rest / 3))
  return (
    <Box flexDirection="column" width={width}>
      <Line width={width} bold>{`  ${fit('ZONE', 10)} ${buckets.map((b) => fit(b, 8, 'right')).join(' ')}   (node certificates by time left)`}</Line>
      {data.certGrid.map((z) => (
        <Text key={z.zone} wrap="truncate">
          {`  ${fit(z.zone, 10)} `}
          {buckets.map((b) => {
            const v = z.buckets[b]
            return (
              <Text key={b} color={v > 0 ? tone(colors, BUCKET_COLOR[b]) : undefined}>
                {`${fit(v === 0 ? '·' : String(v), 8, 'right')} `}
              </Text>
            )
          })}
        </Text>
      ))}
      <Line width={width} bold>{`expiring first: ${data.expiring.length === 0 ? 'none within 30 days' : ''}`}</Line>
      {data.expiring.slice(0, perList).map((e) => (
        <Line key={e.node_id} width={width} color={tone(colors, e.days_left < 7 ? 'red' : e.days_left < 10 ? 'yellow' : 'cyan')}>
          {`  ${fit(e.node_id, 14)} ${fit(e.zone, 10)} ${e.days_left < 0 ? 'expired' : `${e.days_left}d left`}`}
        </Line>
      ))}
      <Line width={width} bold>{`unsigned images: ${data.unsigned.length === 0 ? 'none' : data.unsigned.length}`}</Line>
      {data.unsigned.slice(0, perList).map((u) => (
        <Text key={u.subject} wrap="truncate">
          {'  '}
          <Text color={tone(colors, SEVERITY_COLOR[u.severity])}>{fit(u.severity, 9)}</Text>
          {` ${u.summary}`}
        </Text>
      ))}
      <Line width={width} bold>{`critical findings: ${data.findings.length === 0 ? 'none' : `${data.findings.length} node(s)`}`}</Line>
      {data.findings.slice(0, perList).map((f) => (
        <Line key={f.node_id} width={width} color={tone(colors, 'red')}>{`  ${fit(f.node_id, 14)} ${f.findings.map((x) => x.title).join('; ')}`}</Line>
      ))}
    </Box>
  )
}
