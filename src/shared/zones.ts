/**
 * The 13 compliance zones (DESIGN.md §3), in the order HQ's migration 001 seeds its `zones` table.
 * The table is the authority at HQ (admission refuses a zone it does not hold; a new jurisdiction is
 * a migration); this list is for what has no database at hand: `jil top`'s Overview and Security
 * grids, which show every zone (an empty one too), and the hints of HQ's errors. A unit test keeps
 * the two equal.
 */
export const ZONES = ['CH/FINMA', 'AE/FSRA', 'SG/MAS', 'US/FINCEN', 'GB/FCA', 'DE/BAFIN', 'JP/JFSA', 'BR/CVM', 'IN/SEBI', 'AU/ASIC', 'KR/FSC', 'CA/OSC', 'HK/SFC'] as const
export type Zone = (typeof ZONES)[number]

/** The shape of a zone in either form, any regulator: CH/FINMA or CH_FINMA. */
export const ZONE_ANY_FORM_PATTERN = /^[A-Z]{2}[/_][A-Z]+$/

/** The shape of a zone in URL paths: CH_FINMA. */
export const ZONE_PATH_PATTERN = /^[A-Z]{2}_[A-Z]+$/

/** The hint of an error about an unknown zone. */
export const ZONES_HINT = `zones: ${ZONES.join(', ')}`

/** CH/FINMA → CH_FINMA: the form in URL paths and topic names (DESIGN.md §6). */
export function zoneToPath(zone: string): string {
  return zone.replace('/', '_')
}

/** URL form CH_FINMA → CH/FINMA; the / form passes through. */
export function zoneFromPath(zone: string): string {
  return zone.replace('_', '/')
}
