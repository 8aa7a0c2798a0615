import type {TSchema} from '@sinclair/typebox'
import {TypeCompiler} from '@sinclair/typebox/compiler'
import type {FastifySchema, FastifySchemaCompiler} from 'fastify'

/**
 * Validation without type coercion, for what HQ signs or stores as sent (stack specs, pins,
 * heartbeats, reports). The app's ajv coerces, as querystrings need, and would quietly rewrite a
 * body: a null in a string-or-null field becomes "", a string where a list belongs a one-item list.
 * Errors take ajv's shape, so the one error handler names the field as for every other route.
 */
export const verbatimValidator: FastifySchemaCompiler<FastifySchema> = ({schema}) => {
  // Route schemas here are TypeBox's (fastify hands them over as declared).
  const checker = TypeCompiler.Compile(schema as TSchema)
  const validate = Object.assign(
    (data: unknown): boolean => {
      if (checker.Check(data)) return true
      validate.errors = [...checker.Errors(data)].slice(0, 1).map((e) => ({instancePath: e.path, message: e.message, params: {}, keyword: 'type', schemaPath: ''}))
      return false
    },
    {errors: [] as {instancePath: string; message: string; params: Record<string, never>; keyword: string; schemaPath: string}[]},
  )
  return validate
}
