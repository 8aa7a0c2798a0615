import {Box, Text} from 'ink'
import {useMemo, useRef, useState} from 'react'

import type {ActionState} from '../hooks/use-action.js'
import {clamp, fit, nextTrack, sortImages, windowAt, type ImageListRow} from '../model.js'
import {DialogLine, Hints, Line, ResultLine, tone, useDialog, useKeys, type Frame} from './common.js'

export type ImagesProps = Frame & {
  images: readonly ImageListRow[]
  readonly: boolean
  result: ActionState
  onApprove: (image: ImageListRow, track: 'testnet' | 'mainnet') => void
  onPromote: (image: ImageListRow, to: 'testnet' | 'mainnet') => void
}

/**
 * Signed images per track: version, digest, approvals. `a` approves the selected image for its
 * next track (signed with the user's key), `p` promotes it there; HQ decides by role (a 403 is shown).
 */
export function Images({images, width, height, colors, active, readonly, result, onApprove, onPromote}: ImagesProps) {
  const rows = useMemo(() => sortImages(images), [images])
  const [cursor, setCursor] = useState(0)
  const top = useRef(0)
  const dialogs = useDialog()
  const sel = clamp(cursor, rows.length)
  const bodyHeight = Math.max(1, height - 4)
  const win = windowAt(rows.length, sel, bodyHeight, top.current)
  top.current = win.top
  const narrow = width < 100

  useKeys((input, key) => {
    if (dialogs.handle(input, key)) return true
    if (key.downArrow || input === 'j') setCursor(clamp(sel + 1, rows.length))
    else if (key.upArrow || input === 'k') setCursor(clamp(sel - 1, rows.length))
    else if (key.pageDown) setCursor(clamp(sel + bodyHeight, rows.length))
    else if (key.pageUp) setCursor(clamp(sel - bodyHeight, rows.length))
    if (readonly) return
    const img = rows[sel]
    const to = img && !img.deprecated ? nextTrack(img.track) : null
    if (!img || !to) return
    if (input === 'a') dialogs.open({kind: 'confirm', question: `Approve ${img.image} ${img.version} (${img.digest.slice(0, 19)}) for ${to}, signed with your key?`, onYes: () => onApprove(img, to)})
    else if (input === 'p') dialogs.open({kind: 'confirm', question: `Promote ${img.image} ${img.version} from ${img.track} to ${to}?`, onYes: () => onPromote(img, to)})
  }, active)

  const head = `  ${fit('TRACK', 8)}  ${fit('IMAGE', 22)}  ${fit('VERSION', 9)}  ${fit('DIGEST', 19)}  ${fit('APPR', 4, 'right')}${narrow ? '' : `  ${fit('APPROVERS', 20)}  STATUS`}`
  return (
    <Box flexDirection="column" width={width}>
      <Line width={width} bold>{head}</Line>
      {rows.length === 0 && <Line width={width}>{'  no signed images'}</Line>}
      {rows.slice(win.top, win.end).map((i, k) => {
        const selected = win.top + k === sel
        return (
          <Text key={`${i.track}:${i.digest}`} wrap="truncate" inverse={colors && selected}>
            {`${selected ? '>' : ' '} ${fit(i.track, 8)}  ${fit(i.image, 22)}  ${fit(i.version, 9)}  ${i.digest.slice(0, 19)}  ${fit(String(i.approvals), 4, 'right')}`}
            {narrow ? '' : `  ${fit(i.approvers.join(',') || '-', 20)}  `}
            {narrow ? '' : <Text color={tone(colors, i.deprecated ? 'red' : 'green')}>{i.deprecated ? `deprecated: ${i.deprecated.reason}` : 'live'}</Text>}
          </Text>
        )
      })}
      <DialogLine dialog={dialogs.dialog} colors={colors} width={width} />
      <ResultLine state={result} colors={colors} width={width} />
      <Hints width={width} colors={colors} hints={readonly ? ['↑/↓ move', 'read-only: actions hidden'] : ['↑/↓ move', 'a approve for next track', 'p promote to next track']} />
    </Box>
  )
}
