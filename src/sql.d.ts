// Migrations are .sql files embedded in the build (esbuild's text loader; a vite plugin in tests).
declare module '*.sql' {
  const sql: string
  export default sql
}
