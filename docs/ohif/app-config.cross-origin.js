// OHIF Viewer 3.13 app-config.js for a viewer on its own origin reading a PAIR node
// cross-origin (docs/viewers.md, way 2). Replace https://pair.hospital.example with the node's
// address and list the viewer's origin in the node's PAIR_CORS_ORIGINS.
// The user's PAIR API token is handed over once in the viewer's URL (?token=...), kept in this
// tab's sessionStorage and removed from the address bar; OHIF then sends it as
// "Authorization: Bearer ..." with every QIDO-RS and WADO-RS request, study list included.
// Tested by tests/web/test_ohif_browser.py::test_ohif_on_another_origin_with_cors_and_a_bearer_token.
window.config = ({ servicesManager }) => {
  const node = 'https://pair.hospital.example';
  const url = new URL(window.location.href);
  const given = url.searchParams.get('token');
  if (given) {
    sessionStorage.setItem('pair-token', given);
    url.searchParams.delete('token');
    window.history.replaceState(null, '', url.toString());
  }
  const token = sessionStorage.getItem('pair-token');
  // OHIF asks its user authentication service for the header of every request; the data
  // source's onConfiguration hook runs once the services exist, before the first request
  const useToken = configuration => {
    if (token) {
      servicesManager.services.userAuthenticationService.setServiceImplementation({
        getAuthorizationHeader: () => ({ Authorization: 'Bearer ' + token }),
      });
    }
    return configuration;
  };
  return {
    routerBasename: '/',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    defaultDataSourceName: 'pair',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'pair',
        configuration: {
          friendlyName: 'PAIR node',
          name: 'pair',
          qidoRoot: node + '/dicomweb',
          wadoRoot: node + '/dicomweb',
          wadoUriRoot: node + '/wado',
          qidoSupportsIncludeField: true,
          supportsReject: false,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          singlepart: 'bulkdata,video',
          omitQuotationForMultipartRequest: true,
          onConfiguration: useToken,
        },
      },
    ],
  };
};
