// Starts GraphiQL on this origin's API: queries and mutations over POST /graphql,
// subscriptions over /graphql/ws (graphql-transport-ws, the graphql-ws client bundled
// in graphiql.min.js). A token goes in the Headers tab as
// {"Authorization": "Bearer <token>"}: sent as an HTTP header, and as the socket's
// connection_init payload.
(function () {
  'use strict';
  var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: location.origin + '/graphql',
    subscriptionUrl: scheme + '//' + location.host + '/graphql/ws',
  });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: 'headers',
      defaultQuery: '# Aula GraphQL API: try\n{ health { status } }\n',
    }),
  );
})();
