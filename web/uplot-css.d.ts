// esbuild loads .css as text (scripts/build-web.mjs): the page injects uPlot's stylesheet.
declare module '*.css' {
  const text: string;
  export default text;
}
